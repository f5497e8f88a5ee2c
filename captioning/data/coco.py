"""Readers from annotation files into :class:`CaptionRecord`: official COCO files and Karpathy JSON; and the readers
of ``captioning score``, which read a COCO captions file and a results file as pycocoevalcap's ``COCOEvalCap`` does.

Malformed files fail at once, naming the file and the position (JSON line and column, or the entry index) and the
problem; empty captions are dropped from records with a counted :class:`~captioning.data.records.DataWarning`
(references read for scoring keep them, with a warning).

COCO caption/instance files: https://cocodataset.org/#format-data (read with pycocotools).
Karpathy split files (``dataset_coco.json``, ``dataset_flickr8k.json``, ...): Karpathy & Fei-Fei, CVPR 2015,
"Deep Visual-Semantic Alignments"; ``restval`` images are merged into ``train`` by default.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Literal

from pycocotools.coco import COCO

from captioning.data.records import Box, CaptionRecord, DataWarning, drop_empty_captions, read_json
from captioning.errors import CaptioningError
from captioning.metrics.tokenize import has_ptb_tokens

KARPATHY_SPLITS = ("train", "restval", "val", "test")


def _load_coco(path: Path, *, kind: Literal["captions", "instances"]) -> COCO:
    """Reads and checks a COCO annotation file, then indexes it with pycocotools.

    pycocotools itself accepts structural mistakes silently (an annotation of an unknown image, a repeated image id
    overwrites the first) or fails deep inside ``createIndex`` with a bare ``KeyError``; the checks here name the
    file, the entry and the problem first.
    """
    data = read_json(path, f"COCO {kind} file")
    if not (
        isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list)
    ):
        raise CaptioningError(f"{path}: a COCO {kind} file is a JSON object with 'images' and 'annotations' lists")
    first_seen: dict[int, int] = {}
    for index, image in enumerate(data["images"]):
        if not (
            isinstance(image, dict) and isinstance(image.get("id"), int) and isinstance(image.get("file_name"), str)
        ):
            raise CaptioningError(f"{path}: images[{index}] needs an integer 'id' and a string 'file_name'")
        if image["id"] in first_seen:
            raise CaptioningError(
                f"{path}: images[{index}] repeats image id {image['id']} (first at images[{first_seen[image['id']]}])"
            )
        first_seen[image["id"]] = index
    field, kind_of = ("caption", str) if kind == "captions" else ("bbox", list)
    categories = {c.get("id") for c in data.get("categories", []) if isinstance(c, dict)}
    for index, ann in enumerate(data["annotations"]):
        if not (isinstance(ann, dict) and isinstance(ann.get("id"), int) and isinstance(ann.get(field), kind_of)):
            raise CaptioningError(f"{path}: annotations[{index}] needs an integer 'id' and a '{field}'")
        if kind == "instances" and not (len(ann["bbox"]) == 4 and ann.get("category_id") in categories):
            raise CaptioningError(
                f"{path}: annotations[{index}] needs a 4-number 'bbox' and a 'category_id' of 'categories'"
            )
        if ann.get("image_id") not in first_seen:
            raise CaptioningError(
                f"{path}: annotations[{index}] refers to image_id {ann.get('image_id')!r}, not in 'images'"
            )
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


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
        One record per image that has at least one caption with a word, ordered by image id; every caption of an image
        in file order, also where annotation ids repeat (as pycocotools' ``imgToAnns`` has them).
    """
    caption_file, image_dir = Path(caption_file), Path(image_dir)
    coco = _load_coco(caption_file, kind="captions")
    boxes = _boxes_by_image(_load_coco(Path(instances_file), kind="instances")) if instances_file else {}
    records = []
    for image_id in sorted(coco.getImgIds()):
        # imgToAnns, not loadAnns(getAnnIds()): the latter looks each id up in ``anns``, where a repeated annotation
        # id keeps only its last caption.
        captions = tuple(ann["caption"] for ann in coco.imgToAnns[image_id])
        file_name = coco.imgs[image_id]["file_name"]
        records.append(CaptionRecord(image_id, image_dir / file_name, captions, split, boxes.get(image_id, ())))
    return drop_empty_captions(records, caption_file)


def read_karpathy(path: str | Path, image_root: str | Path, *, merge_restval: bool = True) -> list[CaptionRecord]:
    """Reads a Karpathy-format split file into records of every split.

    Args:
        path: ``dataset_coco.json`` / ``dataset_flickr8k.json`` / ``dataset_flickr30k.json`` / ``dataset_shapes.json``.
        image_root: images live at ``image_root / filepath / filename`` (``filepath`` may be absent, as in Flickr).
        merge_restval: put ``restval`` images into ``train`` (the usual 113,287-image COCO train split).

    Image ids are ``cocoid`` where present (COCO), else ``imgid`` (Flickr), else the entry's position.
    """
    path, image_root = Path(path), Path(image_root)
    data = read_json(path, "Karpathy split file")
    if not (isinstance(data, dict) and isinstance(data.get("images"), list)):
        raise CaptioningError(f"{path}: not a Karpathy split file (a JSON object with an 'images' list)")
    records, first_seen = [], {}
    for index, image in enumerate(data["images"]):
        problem = _karpathy_entry_problem(image)
        if problem:
            raise CaptioningError(f"{path}: Karpathy split file: images[{index}] {problem}")
        image_id = int(image.get("cocoid", image.get("imgid", index)))
        if image_id in first_seen:
            raise CaptioningError(
                f"{path}: images[{index}] repeats image id {image_id} (first at images[{first_seen[image_id]}])"
            )
        first_seen[image_id] = index
        split = "train" if image["split"] == "restval" and merge_restval else image["split"]
        file = image_root / image.get("filepath", "") / image["filename"]
        records.append(CaptionRecord(image_id, file, tuple(s["raw"] for s in image["sentences"]), split))
    return drop_empty_captions(records, path)


def _karpathy_entry_problem(image: object) -> str | None:
    """What is wrong with one entry of a Karpathy file's ``images`` list, or None."""
    if not isinstance(image, dict):
        return "is not a JSON object"
    if not isinstance(image.get("filename"), str):
        return "has no 'filename'"
    if not isinstance(image.get("cocoid", image.get("imgid", 0)), int):
        return "has a non-integer 'cocoid' / 'imgid'"
    if image.get("split") not in KARPATHY_SPLITS:
        return f"has split {image.get('split')!r}, not one of {', '.join(KARPATHY_SPLITS)}"
    sentences = image.get("sentences")
    if not (
        isinstance(sentences, list) and all(isinstance(s, dict) and isinstance(s.get("raw"), str) for s in sentences)
    ):
        return "needs a 'sentences' list of {'raw': caption} objects"
    return None


def read_coco_references(path: str | Path, image_ids: Collection[int] | None = None) -> dict[int, list[str]]:
    """Reads the reference captions of a COCO captions file as ``COCOEvalCap`` does, for scoring.

    Every annotation of an image counts, in file order, also where annotation ids repeat (pycocotools'
    ``imgToAnns``). References that PTB tokenization leaves without a token (empty, whitespace or punctuation only)
    are kept, as pycocoevalcap scores against them too, with one :class:`~captioning.data.records.DataWarning` that
    gives their count and an annotation id.

    Args:
        path: e.g. ``captions_val2014.json``.
        image_ids: the images to read (those of a results file); None: every image of the file that has a caption.
            The file may hold more images (the 40,504 of val2014 for the 5,000 Karpathy test images).

    Returns:
        Image id -> its raw reference captions, ordered by image id.

    Raises:
        CaptioningError: naming the file and the problem: the file's own (see :func:`read_coco_captions`), or images
            of ``image_ids`` that the file does not have or gives no caption (some of their ids).
    """
    path = Path(path)
    coco = _load_coco(path, kind="captions")
    if image_ids is None:
        image_ids = [i for i in coco.getImgIds() if coco.imgToAnns[i]]
    missing = sorted(i for i in image_ids if not coco.imgToAnns.get(i))
    if missing:
        raise CaptioningError(
            f"{path}: no reference captions for {len(missing)} of the {len(image_ids)} images to score "
            f"(image ids {', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''})"
        )
    references = {i: [ann["caption"] for ann in coco.imgToAnns[i]] for i in sorted(image_ids)}
    empty = [ann["id"] for i in references for ann in coco.imgToAnns[i] if not has_ptb_tokens(ann["caption"])]
    if empty:
        warnings.warn(
            f"{path}: {len(empty)} reference caption(s) of the scored images have no word after PTB tokenization "
            f"(e.g. annotation id {empty[0]}); kept, as pycocoevalcap scores against them too",
            DataWarning,
            stacklevel=2,
        )
    return references


def read_coco_results(path: str | Path) -> dict[int, str]:
    """Reads a COCO captioning results file, ``[{"image_id": int, "caption": str}, ...]``, into {image id: caption}.

    Raises:
        CaptioningError: naming the file and the problem (not JSON, with the line and column; not a list of such
            entries, with the entry's index; a caption that is null or not a string, with its image id; an image id
            given twice).
    """
    path = Path(path)
    entries = read_json(path, "results file")
    if not isinstance(entries, list):
        raise CaptioningError(f"{path}: a results file is a JSON list of {{image_id, caption}} entries")
    captions: dict[int, str] = {}
    for index, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("image_id"), int) and "caption" in entry):
            raise CaptioningError(f"{path}: entry {index} is not an {{image_id: int, caption: str}} object")
        image_id, caption = entry["image_id"], entry["caption"]
        if not isinstance(caption, str):  # str() would score None as the word "none"
            kind = "a number" if isinstance(caption, int | float) else f"a {type(caption).__name__}"
            shown = "null" if caption is None else f"{caption!r} ({kind})"
            raise CaptioningError(f"{path}: entry {index} (image_id {image_id}): the caption is {shown}, not a string")
        if image_id in captions:
            raise CaptioningError(f"{path}: entry {index} repeats image_id {image_id}")
        captions[image_id] = caption
    return captions
