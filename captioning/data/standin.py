"""A COCO-size stand-in: the shapes generator's images and captions in the COCO 2014 / Karpathy layout, at full size.

COCO cannot be downloaded on these machines; this writes what a user's ``data/coco`` holds, at COCO's sizes, so that
every stage that grows with the dataset (``prepare``, the vocabulary, the data module, the image cache, loading,
feature extraction, evaluation) can be rehearsed at scale (``benchmarks/scale.py``):

    DIR/dataset_coco.json                      Karpathy split file: train / restval / val / test
    DIR/train2014/COCO_train2014_{id:012d}.jpg  the train split (82,783 images at scale 1)
    DIR/val2014/COCO_val2014_{id:012d}.jpg      restval (30,504), val (5,000) and test (5,000)
    DIR/annotations/captions_{train,val}2014.json, instances_{train,val}2014.json   official-format files

Counts are COCO's times ``scale``. Images are JPEGs (quality 90, as small as ``image_size``: 32 px by default, about
1.2 KB each, 150 MB at full size); captions are the shapes captions, five per image and a sixth or seventh for some
(COCO has 5-7: about 10% get six, 2% seven). Image ids run 1..N (train2014 first), annotation ids 1..M.
Deterministic: image ``i`` comes from ``default_rng([seed, i])`` whatever the number of worker processes, and JSON is
written compactly with sorted keys (one seed, one set of bytes).
"""

from __future__ import annotations

import json
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from captioning.data.shapes import SHAPES, _captions, _instance, _render, _sample_objects, _tokens

# COCO 2014 and the Karpathy split (Karpathy & Fei-Fei, CVPR 2015): train2014 = train; val2014 = restval + val + test.
COCO_COUNTS = {"train": 82_783, "restval": 30_504, "val": 5_000, "test": 5_000}
FOLDER = {"train": "train2014", "restval": "val2014", "val": "val2014", "test": "val2014"}


def _one(args: tuple[int, str, int, int, Path]) -> dict:
    """Draws and writes image ``image_id``; returns its entry (captions, boxes) for the annotation files."""
    image_id, split, seed, image_size, out = args
    rng = np.random.default_rng([seed, image_id])
    objects = _sample_objects(rng, image_size)
    captions = _captions(rng, objects)
    extra = rng.random()
    if extra < 0.12:  # COCO has 5-7 captions per image
        captions += _captions(rng, objects)[: 1 if extra >= 0.02 else 2]
    folder = FOLDER[split]
    name = f"COCO_{folder}_{image_id:012d}.jpg"
    _render(rng, objects, image_size).save(out / folder / name, quality=90)
    return {"id": image_id, "split": split, "file_name": name, "captions": captions, "objects": objects}


def generate_coco_standin(
    out: str | Path,
    *,
    scale: float = 1.0,
    image_size: int = 32,
    seed: int = 0,
    workers: int = 2,
    show_progress: bool = True,
) -> dict[str, int]:
    """Writes the stand-in under ``out`` (see the module docstring); returns {Karpathy split: images}."""
    if not 0 < scale <= 1 or image_size < 32:
        raise ValueError(f"need 0 < scale <= 1 and image_size >= 32, got scale={scale}, image_size={image_size}")
    out = Path(out)
    counts = {split: max(1, round(n * scale)) for split, n in COCO_COUNTS.items()}
    for folder in ("train2014", "val2014", "annotations"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    jobs = [
        (i + 1, split, seed, image_size, out) for i, split in enumerate(s for s in counts for _ in range(counts[s]))
    ]
    bar = tqdm(total=len(jobs), desc="COCO stand-in", unit="img", disable=not show_progress)
    images = []
    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:  # spawn: no fork of a process holding threads
            for image in pool.imap(_one, jobs, chunksize=256):
                images.append(image)
                bar.update()
    else:
        for job in jobs:
            images.append(_one(job))
            bar.update()
    bar.close()
    _write_annotations(out, images, image_size=image_size, seed=seed)
    return counts


def _write_annotations(out: Path, images: list[dict], *, image_size: int, seed: int) -> None:
    info = {"description": "COCO-size stand-in of synthetic shapes", "version": "1.0", "seed": seed}
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]
    caption_id, karpathy = 0, []
    files: dict[str, dict[str, list]] = {
        f: {"images": [], "captions": [], "instances": []} for f in ("train2014", "val2014")
    }
    for image in images:
        folder = FOLDER[image["split"]]
        entry = {"id": image["id"], "file_name": image["file_name"], "width": image_size, "height": image_size}
        files[folder]["images"].append(entry)
        sentences = []
        for caption in image["captions"]:
            caption_id += 1
            files[folder]["captions"].append({"id": caption_id, "image_id": image["id"], "caption": caption})
            sentences.append(
                {"tokens": _tokens(caption), "raw": caption, "imgid": image["id"] - 1, "sentid": caption_id - 1}
            )
        for k, obj in enumerate(image["objects"]):
            files[folder]["instances"].append(_instance(obj, 3 * (image["id"] - 1) + k + 1, image["id"]))
        karpathy.append(
            {
                "filepath": folder,
                "filename": image["file_name"],
                "imgid": image["id"] - 1,
                "cocoid": image["id"],
                "split": image["split"],
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
            }
        )
    for folder, content in files.items():
        common = {"info": info, "licenses": [], "images": content["images"]}
        _dump(out / "annotations" / f"captions_{folder}.json", {**common, "annotations": content["captions"]})
        instances = {**common, "annotations": content["instances"], "categories": categories}
        _dump(out / "annotations" / f"instances_{folder}.json", instances)
    _dump(out / "dataset_coco.json", {"dataset": "coco", "images": karpathy})


def _dump(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, sort_keys=True, separators=(",", ":")))  # compact, as COCO's own files
