"""COCO caption metrics (pycocoevalcap's numbers) over pre-tokenized text, and the PTB tokenization step."""

from captioning.metrics.cider import CiderD
from captioning.metrics.scorers import (
    METRICS,
    WITH_SPICE,
    bleu,
    cider_d,
    close_meteor,
    coco_scores,
    meteor,
    rouge_l,
)
from captioning.metrics.spice import spice_score, spice_unavailable
from captioning.metrics.tokenize import ptb_tokenize

__all__ = [
    "METRICS",
    "WITH_SPICE",
    "CiderD",
    "bleu",
    "cider_d",
    "close_meteor",
    "coco_scores",
    "meteor",
    "ptb_tokenize",
    "rouge_l",
    "spice_score",
    "spice_unavailable",
]
