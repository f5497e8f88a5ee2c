"""A synthetic captioned "shapes" dataset: trains a captioner on a laptop CPU, with no downloads.

Each image has a muted, randomly coloured background with a smooth low-frequency texture (a few random sinusoids)
and per-pixel gaussian noise, and one to three non-overlapping objects. An object has a shape (circle, square,
triangle, diamond, star), one of six well separated colours, and a size (small or large: about 18 and 32 px at
96 px). No two objects of an image share both colour and shape, so every phrase names exactly one object.

Every image gets five reference captions from varied templates and synonyms ("a small red circle to the left of a
blue box", "two shapes: a big green triangle and a yellow star", ...). Spatial relations compare object centres:
horizontal when ``|dx| > |dy|``, vertical otherwise. Captions are at most 16 words over a vocabulary of about 60.

Layout (what :mod:`captioning.data.coco` reads): ``images/{split}/{image_id:06d}.png``; the official COCO files
``captions_{split}.json`` and ``instances_{split}.json`` (boxes, polygons, and extra ``color``/``size`` keys); and
the Karpathy split file ``dataset_shapes.json``. Image ids run 1..N over train, then val, then test.

Generation is deterministic: image ``image_id`` is drawn from ``np.random.default_rng([seed, image_id])``, so it
does not depend on generation order, and JSON is written with sorted keys, so one seed always gives the same bytes.
"""

from __future__ import annotations

import colorsys
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

# fmt: off
# Word lists: the first word is the category / attribute name, the rest are synonyms used in captions.
SHAPES = MappingProxyType({"circle": ("circle", "ball", "disc"), "square": ("square", "box"), "triangle": ("triangle",),
                           "diamond": ("diamond", "rhombus"), "star": ("star",)})
COLOURS = MappingProxyType({"red": (215, 35, 35), "green": (40, 175, 60), "blue": (45, 90, 230),
                            "yellow": (240, 215, 40), "purple": (150, 60, 200), "white": (240, 240, 240)})  # RGB
SIZES = MappingProxyType({"small": ("small", "little", "tiny"), "large": ("large", "big")})
SIDE_FRACTION = MappingProxyType({"small": 0.19, "large": 0.34})  # of the image side: 18 and 32 px at 96 px
# How object A lies relative to object B -> phrases for "A <phrase> B".
RELATIONS = MappingProxyType({"left": ("to the left of", "left of"), "right": ("to the right of", "right of"),
                              "above": ("above", "over"), "below": ("below", "under")})
SPLITS = ("train", "val", "test")
MAX_WORDS = 16
CAPTIONS_PER_IMAGE = 5

# Templates per object count. {a}, {b}, {c}: noun phrases ("a small red circle"); {a_bare}: {a} without its
# determiner; {rel}: the relation of {a} to {b}.
_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("{a}", "there is {a}", "{a} on a textured background", "an image of {a}", "a picture of {a}", "one {a_bare}",
     "a single {a_bare} on a noisy background"),
    ("{a} {rel} {b}", "there is {a} {rel} {b}", "{a} and {b}", "two shapes: {a} and {b}", "{a} next to {b}",
     "an image of {a} and {b}", "{a} {rel} {b} on a textured background"),
    ("three shapes: {a}, {b} and {c}", "{a}, {b} and {c}", "{a} {rel} {b} and one more shape",
     "there are three shapes with {a} {rel} {b}", "three objects including {a} {rel} {b}",
     "an image of {a}, {b} and {c}"),
)
# fmt: on


@dataclass(frozen=True)
class _Object:
    shape: str
    colour: str
    size: str
    x: int  # top-left corner of the object's square in pixels
    y: int
    side: int


def _place(rng: np.random.Generator, sides: list[int], image_size: int) -> list[tuple[int, int]] | None:
    """Top-left corners for squares of ``sides`` that keep a margin from each other, or None if none were found."""
    margin = max(2, image_size // 24)  # 4 px at 96 px: objects never touch
    corners: list[tuple[int, int]] = []
    for side in sides:
        for _ in range(100):
            x, y = (int(v) for v in rng.integers(1, image_size - side, size=2))
            if all(
                x + side + margin <= cx or cx + cs + margin <= x or y + side + margin <= cy or cy + cs + margin <= y
                for (cx, cy), cs in zip(corners, sides, strict=False)
            ):
                corners.append((x, y))
                break
        else:
            return None
    return corners


def _sample_objects(rng: np.random.Generator, image_size: int) -> list[_Object]:
    """One to three objects with distinct (colour, shape) pairs at non-overlapping positions."""
    pairs = [(shape, colour) for shape in SHAPES for colour in COLOURS]
    while True:
        count = int(rng.integers(1, 4))
        chosen = [pairs[i] for i in rng.choice(len(pairs), size=count, replace=False)]
        sizes = [str(rng.choice(list(SIZES))) for _ in range(count)]
        sides = [round(SIDE_FRACTION[size] * image_size) for size in sizes]
        corners = _place(rng, sides, image_size)
        if corners is not None:
            return [
                _Object(shape, colour, size, x, y, side)
                for (shape, colour), size, side, (x, y) in zip(chosen, sizes, sides, corners, strict=True)
            ]


def _polygon(obj: _Object) -> list[tuple[float, float]]:
    """The object's outline (a 24-gon for circles), clockwise in image coordinates."""
    x0, y0, x1, y1, r = obj.x, obj.y, obj.x + obj.side, obj.y + obj.side, obj.side / 2
    cx, cy = x0 + r, y0 + r
    if obj.shape == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if obj.shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if obj.shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if obj.shape == "star":  # five points, inner radius 0.45 of the outer one
        radii, angles = [r if k % 2 == 0 else 0.45 * r for k in range(10)], [-90 + 36 * k for k in range(10)]
    else:
        radii, angles = [r] * 24, [15 * k for k in range(24)]
    return [
        (round(cx + rad * math.cos(math.radians(a)), 2), round(cy + rad * math.sin(math.radians(a)), 2))
        for rad, a in zip(radii, angles, strict=True)
    ]


def _box(obj: _Object) -> tuple[float, float, float, float]:
    """The tight box [x, y, width, height] around the object's outline (what the instances file holds)."""
    xs, ys = [p[0] for p in _polygon(obj)], [p[1] for p in _polygon(obj)]
    return min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)


def _background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """A muted base colour plus a smooth texture of three random sinusoids, as float (H, W, 3)."""
    h, s, v = rng.random(), rng.uniform(0.1, 0.3), rng.uniform(0.25, 0.45)  # dark and grey: objects stand out
    base = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255
    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    texture = np.zeros((image_size, image_size))
    for _ in range(3):
        fx, fy = rng.uniform(-3, 3, size=2)  # at most 3 periods across the image: low frequency
        texture += rng.uniform(4, 10) * np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
    tint = rng.uniform(0.7, 1.3, size=3)  # the texture is not perfectly grey
    return base + texture[..., None] * tint  # (H, W, 3)


def _render(rng: np.random.Generator, objects: list[_Object], image_size: int) -> Image.Image:
    """The background, the objects in slightly jittered colours, then per-pixel gaussian noise."""
    image = Image.fromarray(np.clip(_background(rng, image_size), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for obj in objects:
        fill = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLOURS[obj.colour])
        if obj.shape == "circle":
            draw.ellipse([obj.x, obj.y, obj.x + obj.side, obj.y + obj.side], fill=fill)
        else:
            draw.polygon(_polygon(obj), fill=fill)
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, 6, size=(image_size, image_size, 3))
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def _phrase(rng: np.random.Generator, obj: _Object, *, determiner: str = "a") -> str:
    """A noun phrase such as "a small red circle" or "blue box" (``determiner=""``), with random synonyms."""
    synonyms = SHAPES[obj.shape]
    shape = synonyms[0] if rng.random() < 0.6 or len(synonyms) == 1 else str(rng.choice(synonyms[1:]))
    words = [determiner, str(rng.choice(SIZES[obj.size])) if rng.random() < 0.5 else "", obj.colour, shape]
    return " ".join(w for w in words if w)


def _relation(rng: np.random.Generator, a: _Object, b: _Object) -> str:
    """How ``a`` lies relative to ``b``, e.g. "to the left of", from their box centres.

    Horizontal if |dx| > |dy|, else vertical; y grows downwards.
    """
    (ax, ay, aw, ah), (bx, by, bw, bh) = _box(a), _box(b)
    dx, dy = (ax + aw / 2) - (bx + bw / 2), (ay + ah / 2) - (by + bh / 2)
    key = ("left" if dx < 0 else "right") if abs(dx) > abs(dy) else ("above" if dy < 0 else "below")
    return str(rng.choice(RELATIONS[key]))


def _caption(rng: np.random.Generator, objects: list[_Object], template: str) -> str:
    """Fills ``template`` with the objects in random order, redrawing the phrases if it is over ``MAX_WORDS``."""
    order = [objects[i] for i in rng.permutation(len(objects))]
    while True:
        fields = {"a_bare": _phrase(rng, order[0], determiner=""), "rel": ""}
        fields.update({key: _phrase(rng, obj) for key, obj in zip("abc", order, strict=False)})
        if len(order) > 1:
            fields["rel"] = _relation(rng, order[0], order[1])
        caption = template.format(**fields)
        if len(_tokens(caption)) <= MAX_WORDS:
            return caption


def _captions(rng: np.random.Generator, objects: list[_Object]) -> list[str]:
    """Five captions from five different templates (templates repeat only if there are fewer than five)."""
    templates = _TEMPLATES[len(objects) - 1]
    picks = rng.permutation(len(templates))[:CAPTIONS_PER_IMAGE].tolist()
    picks += rng.integers(0, len(templates), size=CAPTIONS_PER_IMAGE - len(picks)).tolist()
    return [_caption(rng, objects, templates[i]) for i in picks]


def _tokens(caption: str) -> list[str]:
    """Lowercased words with punctuation removed (the Karpathy ``tokens`` of a shapes caption)."""
    return re.findall(r"[a-z0-9]+", caption.lower())


def _instance(obj: _Object, ann_id: int, image_id: int) -> dict:
    """A COCO instance annotation with a tight box, a polygon, its area, and the extra keys color and size."""
    polygon = _polygon(obj)
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    area = 0.5 * abs(sum(xs[i - 1] * ys[i] - xs[i] * ys[i - 1] for i in range(len(polygon))))  # shoelace
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": list(SHAPES).index(obj.shape) + 1,
        "bbox": list(_box(obj)),
        "area": round(area, 2),
        "iscrowd": 0,
        "segmentation": [[v for point in polygon for v in point]],
        "color": obj.colour,
        "size": obj.size,
    }


@dataclass(frozen=True)
class _Image:
    image_id: int
    split: str
    objects: tuple[_Object, ...]
    captions: tuple[str, ...]

    @property
    def file_name(self) -> str:
        return f"{self.split}/{self.image_id:06d}.png"


def _make_image(images_dir: Path, split: str, image_id: int, *, seed: int, image_size: int) -> _Image:
    """Draws one image and its captions from ``default_rng([seed, image_id])`` and writes the PNG."""
    rng = np.random.default_rng([seed, image_id])
    objects = _sample_objects(rng, image_size)
    captions = _captions(rng, objects)
    image = _Image(image_id, split, tuple(objects), tuple(captions))
    _render(rng, objects, image_size).save(images_dir / image.file_name)
    return image


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, sort_keys=True, indent=1) + "\n")  # sorted keys: same seed, same bytes


def _write_coco(out: Path, split: str, images: list[_Image], *, image_size: int, info: dict) -> None:
    """Writes ``captions_{split}.json`` and ``instances_{split}.json``; annotation ids are unique over splits."""
    entries = [{"id": i.image_id, "file_name": i.file_name, "width": image_size, "height": image_size} for i in images]
    captions = [
        {"id": (image.image_id - 1) * CAPTIONS_PER_IMAGE + k + 1, "image_id": image.image_id, "caption": caption}
        for image in images
        for k, caption in enumerate(image.captions)
    ]
    # At most three objects per image, so these ids never collide across images or splits.
    instances = [
        _instance(obj, 3 * (image.image_id - 1) + k + 1, image.image_id)
        for image in images
        for k, obj in enumerate(image.objects)
    ]
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]
    common = {"info": info, "licenses": [], "images": entries}
    _write_json(out / f"captions_{split}.json", {**common, "annotations": captions})
    _write_json(out / f"instances_{split}.json", {**common, "annotations": instances, "categories": categories})


def _karpathy_entry(image: _Image) -> dict:
    """One image of the Karpathy split file; ``sentid`` is the COCO caption id minus one."""
    imgid, first = image.image_id - 1, (image.image_id - 1) * CAPTIONS_PER_IMAGE
    sentences = [
        {"tokens": _tokens(caption), "raw": caption, "imgid": imgid, "sentid": first + k}
        for k, caption in enumerate(image.captions)
    ]
    return {
        "filepath": image.split,
        "filename": image.file_name.split("/")[1],
        "imgid": imgid,
        "cocoid": image.image_id,
        "split": image.split,
        "sentids": [s["sentid"] for s in sentences],
        "sentences": sentences,
    }


def generate_shapes(
    out: str | Path,
    *,
    train: int = 4000,
    val: int = 250,
    test: int = 250,
    seed: int = 0,
    image_size: int = 96,
    show_progress: bool = True,
) -> dict[str, int]:
    """Writes the dataset under ``out`` and returns {split: number of images}.

    Args:
        out: dataset folder (created; existing files of the same names are overwritten).
        train: train images.
        val: val images.
        test: test images.
        seed: the dataset seed (>= 0); image ``image_id`` is drawn from ``default_rng([seed, image_id])``.
        image_size: side of the square RGB images in pixels.
        show_progress: show a tqdm bar over images.

    Raises:
        ValueError: for a negative count or seed, no images at all, or an image size below 32.
    """
    counts = {"train": train, "val": val, "test": test}
    if any(n < 0 for n in counts.values()) or sum(counts.values()) == 0:
        raise ValueError(f"image counts must be >= 0 and not all 0, got {counts}")
    if seed < 0 or image_size < 32:  # numpy seeds are >= 0; three large objects must fit
        raise ValueError(f"need seed >= 0 and image_size >= 32, got seed={seed}, image_size={image_size}")
    out = Path(out)
    splits = [split for split in SPLITS for _ in range(counts[split])]  # image id i + 1 belongs to splits[i]
    for split in SPLITS:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
    images = [
        _make_image(out / "images", split, i + 1, seed=seed, image_size=image_size)
        for i, split in enumerate(tqdm(splits, desc="shapes", unit="img", disable=not show_progress))
    ]
    info = {"description": "synthetic shapes captions", "version": "1.0", "seed": seed, "image_size": image_size}
    for split in SPLITS:
        _write_coco(out, split, [i for i in images if i.split == split], image_size=image_size, info=info)
    _write_json(out / "dataset_shapes.json", {"dataset": "shapes", "images": [_karpathy_entry(i) for i in images]})
    return counts
