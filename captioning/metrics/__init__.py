"""COCO caption metrics (pycocoevalcap's numbers) over pre-tokenized text, and the PTB tokenization step."""

from captioning.metrics.scorers import bleu, cider_d, coco_scores, meteor, rouge_l
from captioning.metrics.tokenize import ptb_tokenize

__all__ = ["bleu", "cider_d", "coco_scores", "meteor", "ptb_tokenize", "rouge_l"]
