"""Reader for a custom folder of captioned images: ``captions.csv`` or ``captions.jsonl`` next to the images.

Rows are ``file,caption[,split]`` (CSV with a header line) or ``{"file": ..., "caption": ..., "split": ...}`` (one
JSON object per line); ``file`` is relative to the folder, one row per caption, so an image with five captions has
five rows. Without a ``split`` column, an image's split is drawn from a hash of its file name (``val_fraction`` /
``test_fraction`` of the images, the rest ``train``): stable when images are added, independent of row order.
Image ids are the 1-based positions of the files in sorted order.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from captioning.data.records import CaptionRecord, drop_empty_captions
from captioning.errors import CaptioningError

CAPTION_FILES = ("captions.csv", "captions.jsonl")
SPLITS = ("train", "val", "test")


def find_captions_file(root: Path, name: str | None = None) -> Path:
    """The folder's captions file: ``name`` if given, else the one of :data:`CAPTION_FILES` that exists."""
    if name:
        return root / name
    present = [root / n for n in CAPTION_FILES if (root / n).is_file()]
    if len(present) > 1:
        raise CaptioningError(f"{root}: both captions.csv and captions.jsonl exist; name the one to use")
    if not present:
        raise CaptioningError(f"{root}: no captions.csv or captions.jsonl (rows of file, caption[, split])")
    return present[0]


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets write a byte-order mark
        reader = csv.DictReader(f)
        missing = {"file", "caption"} - set(reader.fieldnames or ())
        if missing:
            raise CaptioningError(
                f"{path}: line 1: the header needs columns file,caption[,split]; missing {sorted(missing)}"
            )
        for row in reader:
            yield reader.line_num, row


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8-sig") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CaptioningError(f"{path}: line {line_number}, column {e.colno}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise CaptioningError(f"{path}: line {line_number}: not a JSON object")
            yield line_number, row


def hashed_split(file: str, *, val_fraction: float, test_fraction: float) -> str:
    """A file name's split from the first 8 bytes of its SHA-1: uniform, stable, order-free."""
    u = int.from_bytes(hashlib.sha1(file.encode()).digest()[:8], "big") / 2**64  # uniform in [0, 1)
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


def read_custom(
    root: str | Path, *, captions_file: str | None = None, val_fraction: float = 0.05, test_fraction: float = 0.05
) -> list[CaptionRecord]:
    """Reads a custom folder into records of every split (see the module docstring for the layout).

    Raises:
        CaptioningError: naming the file, the line and the problem (a missing column, a bad split name, an image
            given two different splits, invalid JSON or text encoding).
    """
    root = Path(root)
    path = find_captions_file(root, captions_file)
    if not path.is_file():
        raise CaptioningError(f"{path}: captions file not found")
    rows = _jsonl_rows(path) if path.suffix == ".jsonl" else _csv_rows(path)
    captions: dict[str, list[str]] = {}
    splits: dict[str, str] = {}
    try:
        for line, row in rows:
            file, caption, split = row.get("file"), row.get("caption"), row.get("split") or None
            if not isinstance(file, str) or not file.strip():
                raise CaptioningError(f"{path}: line {line}: empty or missing 'file'")
            if not isinstance(caption, str):
                raise CaptioningError(f"{path}: line {line}: 'caption' is missing or not text")
            if split is not None and split not in SPLITS:
                raise CaptioningError(f"{path}: line {line}: split {split!r} is not one of {', '.join(SPLITS)}")
            split = split or hashed_split(file, val_fraction=val_fraction, test_fraction=test_fraction)
            if splits.setdefault(file, split) != split:
                raise CaptioningError(
                    f"{path}: line {line}: {file} was given split {splits[file]!r} before, now {split!r}"
                )
            captions.setdefault(file, []).append(caption)
    except UnicodeDecodeError as e:
        raise CaptioningError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from e
    except csv.Error as e:
        raise CaptioningError(f"{path}: not readable CSV ({e})") from e
    records = [
        CaptionRecord(image_id, root / file, tuple(captions[file]), splits[file])
        for image_id, file in enumerate(sorted(captions), start=1)
    ]
    return drop_empty_captions(records, path)
