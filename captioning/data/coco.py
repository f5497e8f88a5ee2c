"""Readers from annotation files into :class:`CaptionRecord`: official COCO files and Karpathy JSON.

COCO caption/instance files: https://cocodataset.org/#format-data (read with pycocotools).
Karpathy split files (``dataset_coco.json``, ``dataset_flickr8k.json``, ...): Karpathy & Fei-Fei, CVPR 2015,
"Deep Visual-Semantic Alignments"; ``restval`` images are merged into ``train`` by default.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from pycocotools.coco import COCO

from captioning.data.records import Box, CaptionRecord
from captioning.errors import CaptioningError


def _load_coco(path: Path) -> COCO:
    if not path.is_file():
        raise CaptioningError(f"{path}: annotation file not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timing lines
            return COCO(str(path))
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise CaptioningError(f"{path}: not a COCO annotation file ({type(e).__name__}: {e})") from e


def _boxes_by_image(instances: COCO) -> dict[int, tuple[Box, ...]]:
    names = {c["id"]: c["name"] for c in instances.loadCats(instances.getCatIds())}
    boxes: dict[int, list[Box]] = {}
    for ann in instances.loadAnns(instances.getAnnIds()):
        x, y, w, h = ann["bbox"]
        boxes.setdefault(ann["image_id"], []).append(Box(x, y, w, h, names[ann["category_id"]]))
    return {image_id: tuple(b) for image_id, b in boxes.items()}


def read_coco_captions(
    caption_file: str | Path, image_dir: str | Path, *, split: str, instances_file: str | Path | None = None
) -> list[CaptionRecord]:
    """Reads an official COCO captions file (and optionally its instances file for boxes).

    Args:
        caption_file: e.g. ``captions_train2014.json``.
        image_dir: the folder that the files' ``file_name`` entries are relative to.
        split: the split name given to every record.
        instances_file: e.g. ``instances_train2014.json``; adds object boxes to the records.

    Returns:
        One record per image that has at least one caption, ordered by image id.
    """
    caption_file, image_dir = Path(caption_file), Path(image_dir)
    coco = _load_coco(caption_file)
    boxes = _boxes_by_image(_load_coco(Path(instances_file))) if instances_file else {}
    records = []
    for image_id in sorted(coco.getImgIds()):
        captions = tuple(ann["caption"] for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)))
        if not captions:
            continue
        file_name = coco.loadImgs(image_id)[0]["file_name"]
        records.append(CaptionRecord(image_id, image_dir / file_name, captions, split, boxes.get(image_id, ())))
    return records


def read_karpathy(path: str | Path, image_root: str | Path, *, merge_restval: bool = True) -> list[CaptionRecord]:
    """Reads a Karpathy-format split file into records of every split.

    Args:
        path: ``dataset_coco.json`` / ``dataset_flickr8k.json`` / ``dataset_flickr30k.json`` / ``dataset_shapes.json``.
        image_root: images live at ``image_root / filepath / filename`` (``filepath`` may be absent, as in Flickr).
        merge_restval: put ``restval`` images into ``train`` (the usual 113,287-image COCO train split).
    """
    path, image_root = Path(path), Path(image_root)
    if not path.is_file():
        raise CaptioningError(f"{path}: Karpathy split file not found")
    try:
        images = json.loads(path.read_text())["images"]
        records = []
        for i, image in enumerate(images):
            split = image["split"]
            if split == "restval" and merge_restval:
                split = "train"
            image_id = int(image.get("cocoid", image.get("imgid", i)))
            file = image_root / image.get("filepath", "") / image["filename"]
            captions = tuple(s["raw"] for s in image["sentences"])
            records.append(CaptionRecord(image_id, file, captions, split))
    except (ValueError, KeyError, TypeError) as e:
        raise CaptioningError(f"{path}: not a Karpathy split file ({type(e).__name__}: {e})") from e
    return records


def read_coco_results(path: str | Path) -> dict[int, str]:
    """Reads a COCO captioning results file, ``[{"image_id": int, "caption": str}, ...]``, into {image id: caption}.

    Raises:
        CaptioningError: naming the file and the problem (not JSON, with the line and column; not a list of such
            entries, with the entry's index; an image id given twice).
    """
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{path}: results file not found")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CaptioningError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    if not isinstance(entries, list):
        raise CaptioningError(f"{path}: a results file is a JSON list of {{image_id, caption}} entries")
    captions: dict[int, str] = {}
    for index, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("image_id"), int) and "caption" in entry):
            raise CaptioningError(f"{path}: entry {index} is not an {{image_id: int, caption: str}} object")
        if entry["image_id"] in captions:
            raise CaptioningError(f"{path}: entry {index} repeats image_id {entry['image_id']}")
        captions[entry["image_id"]] = str(entry["caption"])
    return captions
