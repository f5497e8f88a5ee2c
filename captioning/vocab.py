"""Caption vocabulary: nltk Treebank tokenization, train-split counts, special tokens, JSON round trip.

Conventions (the COCO caption evaluation's preprocessing, Chen et al. 2015, arXiv 1504.00325, section 3.1, and
Karpathy & Fei-Fei's split files, arXiv 1412.2306): lowercase, punctuation dropped, captions clipped to ``max_len``
words, words below ``min_count`` map to ``<unk>``. The vocabulary is built from the train split only, so no
val/test word leaks into training (the older convention counts every split; see the README).
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from nltk.tokenize import TreebankWordTokenizer

from captioning.errors import CaptioningError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)

# Treebank needs no downloaded model data (nltk's punkt-based word_tokenize does, and this machine has no
# internet). The tokenizer object holds only compiled regexes.
_TREEBANK = TreebankWordTokenizer()
# A letter or digit (``str.isalnum``): Treebank tokenization never drops one and :func:`tokenize` keeps exactly the
# tokens holding one, so a caption has a token if and only if it holds such a character (tests/test_vocab.py checks
# this against tokenize()).
_ALNUM = re.compile(r"[^\W_]")


def tokenize(caption: str) -> list[str]:
    """Lowercase, Treebank-tokenize and drop tokens without a letter or digit (punctuation)."""
    return list(_tokens(caption))


def has_word(caption: str) -> bool:
    """Whether :func:`tokenize` leaves a word of ``caption``, without tokenizing: one regex search instead of nltk's
    Treebank regexes (the readers check every caption of a dataset: 202,520 for COCO val2014)."""
    return _ALNUM.search(caption) is not None


@functools.lru_cache(maxsize=1 << 20)
def _tokens(caption: str) -> tuple[str, ...]:
    """:func:`tokenize`, memoized: nltk's Treebank regexes cost about 0.3 ms a caption, and one process tokenizes the
    same captions for the vocabulary, then for the dataset, and again for the next run (``captioning demo`` trains
    two models; ``ablate`` several). Bounded: 1,048,576 captions, so that COCO's 616,767 fit (about 200 MB there;
    with the earlier bound of 131,072 they cycled, and the first training epoch tokenized every caption again,
    about 0.25 ms an image in ``benchmarks/scale.py``)."""
    return tuple(token for token in _TREEBANK.tokenize(caption.lower()) if any(ch.isalnum() for ch in token))


class Vocabulary:
    """Word <-> index mapping. Indices 0..3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``.

    Args:
        words: the specials, then the words.
        rule: how the words were chosen, where known: ``counted``, the splits whose captions were counted
            (``train`` or ``all``), and ``min_count``, the fewest times a kept word was seen. Recorded (in
            ``vocab.json``, checkpoints and ``scores.json``) so that two models' scores can be compared; encoding
            does not read it.
    """

    def __init__(self, words: Sequence[str], *, rule: dict[str, str | int] | None = None) -> None:
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}, got {list(words[:4])}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        self.words: list[str] = list(words)
        self.rule = dict(rule) if rule else None
        self.index = {word: i for i, word in enumerate(self.words)}
        self.pad, self.bos, self.eos, self.unk = (self.index[s] for s in SPECIALS)

    @classmethod
    def build(cls, captions: Iterable[str], *, min_count: int = 1, counted: str = "train") -> Vocabulary:
        """Counts words over ``captions`` and keeps those seen at least ``min_count`` times.

        Words are sorted by decreasing count, then alphabetically, so the result is deterministic.

        Args:
            captions: raw captions, usually the train split's.
            min_count: the fewest times a kept word was seen.
            counted: which splits ``captions`` come from (``train`` or ``all``), recorded in :attr:`rule`.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(word for caption in captions for word in tokenize(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *kept], rule={"counted": counted, "min_count": min_count})

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: str, *, max_len: int) -> list[int]:
        """Caption -> ``[<bos>, w_1 .. w_n, <eos>]`` with n clipped to ``max_len`` and unknown words as ``<unk>``."""
        ids = [self.index.get(word, self.unk) for word in tokenize(caption)[:max_len]]
        return [self.bos, *ids, self.eos]

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Indices -> caption text; stops at ``<eos>`` and skips ``<bos>`` and ``<pad>``."""
        words = []
        for i in ids.tolist() if isinstance(ids, torch.Tensor) else ids:
            if i == self.eos:
                break
            if i not in (self.bos, self.pad):
                words.append(self.words[i])
        return " ".join(words)

    def save(self, path: str | Path) -> None:
        """Writes ``{"words": [...], "rule": {...}}`` (the rule where known)."""
        Path(path).write_text(
            json.dumps({"words": self.words, **({"rule": self.rule} if self.rule else {})}, indent=0) + "\n"
        )

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Reads a file written by :meth:`save` (files without a ``rule`` load with none)."""
        try:
            data = json.loads(Path(path).read_text())
            words, rule = data["words"], data.get("rule")
            if not (rule is None or isinstance(rule, dict)):
                raise TypeError(f"'rule' must be an object, not {type(rule).__name__}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CaptioningError(f"{path}: not a readable vocabulary file ({e})") from e
        return cls(words, rule=rule)
