"""The one in-memory record type every dataset reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
