"""Tiny datasets on disk with every kind of bad data, in the three annotation formats (COCO, Karpathy, custom).

Images are real JPEG/PNG files: the decodable odd ones (grayscale, CMYK, RGBA, palette with transparency, 16-bit,
EXIF-rotated) and the unreadable ones (corrupt, truncated, zero-byte, missing).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (40, 24)  # (width, height), not square: EXIF rotation is visible in the decoded size


def _noise(mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return _jpeg_bytes(_noise(seed=5), exif=exif.tobytes())


def sixteen_bit_png() -> bytes:
    ramp = np.linspace(0, 65535, SIZE[0] * SIZE[1]).reshape(SIZE[1], SIZE[0]).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    return buffer.getvalue()


def palette_png() -> bytes:
    image = _noise(seed=7).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


def rgba_png() -> bytes:
    image = _noise(seed=8).convert("RGBA")
    alpha = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    alpha[:, : SIZE[0] // 2] = 255  # left half opaque, right half transparent
    image.putalpha(Image.fromarray(alpha, "L"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# file name -> bytes (None: the file is referenced but missing)
GOOD = {
    "rgb.jpg": lambda: _jpeg_bytes(_noise(seed=1)),
    "gray.jpg": lambda: _jpeg_bytes(_noise("L", seed=2)),
    "cmyk.jpg": lambda: _jpeg_bytes(_noise("CMYK", seed=3)),
    "rgba.png": rgba_png,
    "palette.png": palette_png,
    "sixteen.png": sixteen_bit_png,
    "rotated.jpg": exif_rotated,
    "blank.jpg": lambda: _jpeg_bytes(_noise(seed=11)),
}
BAD = {
    "corrupt.jpg": lambda: b"this is not a JPEG file at all" * 20,
    "truncated.jpg": lambda: _jpeg_bytes(_noise(seed=9))[:600],
    "empty.jpg": lambda: b"",
    "missing.jpg": None,
}

# Which split each image goes to; every split keeps readable images.
SPLIT_OF = {
    "rgb.jpg": "train",
    "gray.jpg": "train",
    "cmyk.jpg": "train",
    "rgba.png": "train",
    "palette.png": "val",
    "sixteen.png": "test",
    "rotated.jpg": "train",
    "blank.jpg": "train",
    "corrupt.jpg": "train",
    "truncated.jpg": "train",
    "empty.jpg": "val",
    "missing.jpg": "test",
}
BAD_TRAIN = sum(1 for name in BAD if SPLIT_OF[name] == "train")

# Captions per image: odd ones included. "zebra" is only in a val caption (train-only vocabulary check).
LONG = " ".join(["a very long caption about a red square"] * 8)
CAPTIONS: dict[str, list[str]] = {
    "rgb.jpg": ["a red square on noise", "noise with a red square", "   "],
    "gray.jpg": ["a grey picture of noise", ""],
    "cmyk.jpg": ["a café with crème brûlée", "naïve noise"],
    "rgba.png": ["half a picture", LONG],
    "palette.png": ["a zebra in sixteen colours"],
    "sixteen.png": ["a smooth ramp"],
    "rotated.jpg": ["a sideways photo", "a rotated photo"],
    "blank.jpg": [" ", "..."],  # no caption with a word: the image is left out
    "corrupt.jpg": ["a broken file"],
    "truncated.jpg": ["half a file"],
    "empty.jpg": ["nothing at all"],
    "missing.jpg": ["a file that is not there"],
}
EMPTY_CAPTIONS = 4  # "   ", "", " ", "..."
CAPTIONLESS = ("blank.jpg",)


def write_images(folder: Path) -> None:
    for name, make in {**GOOD, **BAD}.items():
        if make is not None:
            _write(folder / name, make())


def write_coco(root: Path) -> None:
    """``root/captions_{split}.json`` + ``root/images/``: the data module's default ``coco`` layout."""
    write_images(root / "images")
    names = list(CAPTIONS)
    for split in ("train", "val", "test"):
        ids = [i for i, n in enumerate(names, start=1) if SPLIT_OF[n] == split]
        images = [{"id": i, "file_name": names[i - 1], "width": SIZE[0], "height": SIZE[1]} for i in ids]
        anns = [
            {"id": 100 * i + k, "image_id": i, "caption": c} for i in ids for k, c in enumerate(CAPTIONS[names[i - 1]])
        ]
        (root / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": anns}))


def karpathy_json(names: list[str], *, filepath: str | None = None, id_key: str = "imgid") -> dict:
    images = []
    for i, name in enumerate(names, start=1):
        entry = {
            "filename": name,
            id_key: i,
            "split": SPLIT_OF[name],
            "sentences": [{"raw": c} for c in CAPTIONS[name]],
        }
        if filepath:
            entry["filepath"] = filepath
        images.append(entry)
    return {"images": images, "dataset": "test"}


def write_karpathy(root: Path, *, file: str = "dataset_flickr8k.json", image_dir: str = "Flicker8k_Dataset") -> None:
    """A Flickr8k-style layout: ``root/dataset_flickr8k.json`` + ``root/Flicker8k_Dataset/``."""
    write_images(root / image_dir)
    (root / file).write_text(json.dumps(karpathy_json(list(CAPTIONS))))


def write_custom(root: Path, *, jsonl: bool = False, with_split: bool = True) -> None:
    """``root/captions.csv`` (or ``.jsonl``) with one row per caption, images in ``root/photos/``."""
    write_images(root / "photos")
    rows = [
        {"file": f"photos/{name}", "caption": c, **({"split": SPLIT_OF[name]} if with_split else {})}
        for name, captions in CAPTIONS.items()
        for c in captions
    ]
    if jsonl:
        (root / "captions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return
    with (root / "captions.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
