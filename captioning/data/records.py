"""The one in-memory record type every dataset reader produces, and what every reader shares: reading JSON with the
error position, and dropping empty captions with a counted warning."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from captioning.errors import CaptioningError
from captioning.vocab import has_word


class DataWarning(UserWarning):
    """Bad data that was skipped and counted (an empty caption, an unreadable image met in training)."""


@dataclass(frozen=True)
class Box:
    """An object box in COCO convention: top-left corner, width and height in pixels."""

    x: float
    y: float
    width: float
    height: float
    category: str


@dataclass(frozen=True)
class CaptionRecord:
    """One image with all its reference captions.

    Attributes:
        image_id: the dataset's integer image id (COCO ``image_id``).
        path: the image file.
        captions: raw reference captions, as written by the annotators (untokenized).
        split: ``train``, ``val`` or ``test`` (Karpathy ``restval`` is merged into ``train`` by the readers).
        boxes: object boxes, where the dataset has them (shapes; COCO instances).
    """

    image_id: int
    path: Path
    captions: tuple[str, ...]
    split: str
    boxes: tuple[Box, ...] = field(default=())


def read_json(path: Path, what: str) -> Any:
    """Parses a JSON file, or raises a one-line :class:`CaptioningError` with the file and the error's position."""
    if not path.is_file():
        raise CaptioningError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CaptioningError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    except UnicodeDecodeError as e:
        raise CaptioningError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from e


def drop_empty_captions(records: Sequence[CaptionRecord], source: Path) -> list[CaptionRecord]:
    """Drops training captions without a word (empty, whitespace, punctuation only) and then training images without
    a caption; keeps such captions of the val and test splits, which are references.

    A word is what the vocabulary's tokenizer keeps (:func:`~captioning.vocab.has_word`): such a training caption
    would be a target of ``<eos>`` alone. A reference without a word is scored as pycocoevalcap scores it (an empty
    reference: it changes CIDEr-D's document frequencies and BLEU's closest reference length), so that ``evaluate``
    gives the numbers ``captioning score`` and pycocoevalcap give. Every count goes into one :class:`DataWarning`
    naming ``source``: a silent drop would shrink a split unnoticed.
    """
    kept, empty, captionless, references = [], 0, 0, 0
    for record in records:
        captions = tuple(c for c in record.captions if has_word(c))
        if record.split != "train":
            references += len(record.captions) - len(captions)
            kept.append(record)
            continue
        empty += len(record.captions) - len(captions)
        if not captions:
            captionless += 1
            continue
        kept.append(record if len(captions) == len(record.captions) else replace(record, captions=captions))
    problems = []
    if empty or captionless:
        problems.append(f"dropped {empty} empty caption(s); {captionless} image(s) left without a caption are left out")
    if references:
        problems.append(f"kept {references} val/test reference(s) without a word (scored as pycocoevalcap does)")
    if problems:
        warnings.warn(f"{source}: " + "; ".join(problems), DataWarning, stacklevel=2)
    return kept
