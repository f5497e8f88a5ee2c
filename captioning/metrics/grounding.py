"""Attention grounding: does the model look at the object it names?

For every generated word that names an object category (through a synonym table), the spatial attention map of
that word's step (alpha_t, the map whose context produced the word) is upsampled bilinearly to the image, as the
visualizations draw it, and compared with the boxes of the objects of that category in the image:

    pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016):
        hit_t  = [the centre of the heaviest cell of alpha_t lies inside a box of the named category]
             (bilinear upsampling peaks there; its flat border zone would make a pixel argmax drift to the corner)
    attention mass:
        mass_t = sum_{pixels in the union of those boxes} A_t        (A_t upsampled, summing to 1)
    chance (what a uniform map gives for both):
        area_t = |union of those boxes| / |image|

Words naming a category with no box in the image (a hallucinated object) are counted apart and excluded from the
three averages. Every attended layer (``alpha`` for soft attention, ``alpha.<layer>`` for SCA) is scored on its own.

Object naming needs no attention, so it is measured for every model (decoder attention ``none``, blind models). Per
image with boxes, let named = the set of categories that some word of the generated caption names (through the
synonym table) and present = the set of categories of the image's boxes:

    right-object rate, over the one-object images (exactly one box: 83 of the 250 test images of `make demo`'s set;
    an image with two boxes of one category, such as two squares, is not one):
        right_object = |{one-object images with named == present}| / |one-object images|
                       (the caption names the image's category and no other; None without one-object images)
    per category c, over all images with boxes:
        named.c   = |{images: c in named}|                    (captions that name c)
        present.c = |{images: c in present}|                  (images that show c)
        correct.c = |{images: c in named and c in present}|
    from which: named.c / present.c (how often the model says c against how often c is there),
    precision.c = correct.c / named.c and recall.c = correct.c / present.c.

A caption that names a category twice counts once; a multi-word category (COCO's "traffic light") is named only
through the single words of its synonym list ("stoplight").

The synonym tables (caption word -> category) live with their datasets, :mod:`captioning.data.synonyms`; the
tables of these scores for people, :mod:`captioning.viz.tables`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

from captioning.models.attention.weights import FINAL_MAP, AttentionWeights


class Box(Protocol):
    """What grounding reads of an object box (:class:`captioning.data.records.Box` is one): COCO convention, the
    top-left corner, width and height in pixels, and the category name."""

    x: float
    y: float
    width: float
    height: float
    category: str


@dataclass(frozen=True)
class GroundingTarget:
    """One image's objects: its size in pixels (the frame of the boxes) and its boxes."""

    width: float
    height: float
    boxes: tuple[Box, ...]


@dataclass
class LayerTally:
    """Sums over the scored words of one attended layer."""

    words: int = 0  # object words whose category has a box in the image
    hits: int = 0  # pointing-game hits
    mass: float = 0.0  # sum of attention mass inside the matching boxes
    area: float = 0.0  # sum of the matching boxes' share of the image (chance level)

    def add(self, other: LayerTally) -> None:
        self.words += other.words
        self.hits += other.hits
        self.mass += other.mass
        self.area += other.area


@dataclass
class ImageGrounding:
    """Grounding of one caption: a tally per attended layer, the words naming an absent object, and (for object
    naming) the categories the caption names and the categories of the image's boxes."""

    layers: dict[str, LayerTally] = field(default_factory=dict)
    absent: int = 0
    named: frozenset[str] = frozenset()
    present: frozenset[str] = frozenset()
    objects: int = 0  # boxes in the image


def _box_mask(boxes: Sequence[Box], target: GroundingTarget, height: int, width: int) -> torch.Tensor:
    """Union of boxes, rasterized on a (height, width) grid of pixel centres spanning the image: (height, width)."""
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) * (target.height / height)  # pixel centres, image frame
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) * (target.width / width)
    mask = torch.zeros(height, width, dtype=torch.bool)
    for box in boxes:
        inside_y = (ys >= box.y) & (ys < box.y + box.height)  # (height,)
        inside_x = (xs >= box.x) & (xs < box.x + box.width)  # (width,)
        mask |= inside_y[:, None] & inside_x[None, :]
    return mask


def ground_caption(
    words: Sequence[str],
    attention: Mapping[str, torch.Tensor],
    target: GroundingTarget,
    *,
    synonyms: Mapping[str, str],
    resolution: int = 96,
) -> ImageGrounding:
    """Scores one caption's attention against its image's boxes, and records the categories it names.

    Args:
        words: the generated words; word t was produced at step t.
        attention: per layer, the spatial weights of each step, (T', N) with T' >= len(words) and N = h*w
            locations in row-major order, named as the decoder carries them
            (:class:`~captioning.models.attention.weights.AttentionWeights`); only the spatial ones are read.
            Empty for a model without spatial attention: then only the naming fields are filled.
        target: the image's size and boxes.
        synonyms: caption word -> box category.
        resolution: the longer side, in cells, of the grid that maps are upsampled to (the image's aspect ratio).
    """
    named = [(t, synonyms[w]) for t, w in enumerate(words) if w in synonyms]
    present = frozenset(box.category for box in target.boxes)
    spatial = AttentionWeights.of(attention).spatial  # attended layer -> (T', N)
    result = ImageGrounding(
        {layer: LayerTally() for layer in spatial},
        named=frozenset(category for _, category in named),
        present=present,
        objects=len(target.boxes),
    )
    if not named:
        return result
    result.absent = sum(category not in present for _, category in named)
    scored = [(t, category) for t, category in named if category in present]
    scale = resolution / max(target.width, target.height)
    height, width = max(1, round(target.height * scale)), max(1, round(target.width * scale))
    masks = {c: _box_mask([b for b in target.boxes if b.category == c], target, height, width) for _, c in scored}
    for name, weights in spatial.items():
        tally = result.layers[name]
        n = weights.shape[-1]
        grid_h = max(1, round((n * target.height / target.width) ** 0.5))
        if n % grid_h:
            raise ValueError(f"{name}: {n} locations do not form a grid with the image's aspect ratio")
        for t, category in scored:
            grid = weights[t].detach().double().cpu().view(1, 1, grid_h, n // grid_h)  # (1, 1, h, w)
            heat = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            heat = heat.clamp_min(0) / heat.clamp_min(0).sum().clamp_min(1e-12)  # (height, width), sums to 1
            mask = masks[category]  # (height, width)
            tally.words += 1
            peak = int(grid.view(-1).argmax())  # the point: the centre of the heaviest cell (where the upsampled
            row = int((peak // grid.shape[-1] + 0.5) * height / grid_h)  # map peaks, minus its flat border zone)
            col = int((peak % grid.shape[-1] + 0.5) * width / grid.shape[-1])
            tally.hits += bool(mask[row, col])
            tally.mass += float(heat[mask].sum())
            tally.area += float(mask.double().mean())
    return result


def summarize(images: Mapping[int, ImageGrounding]) -> dict[str, float | None]:
    """Corpus grounding: per layer ``pointing.<layer>``, ``mass.<layer>`` and ``area.<layer>`` (chance); the same
    without a suffix for the top attended layer (the one whose map feeds the LSTM: the last in the attention's
    bottom-up order); ``object_words`` (scored words) and ``absent_object_words`` (naming an object not there).
    Then object naming (see the module docstring): ``right_object`` and ``one_object_images``, and for every
    category named or present, ``named.<category>``, ``present.<category>`` and ``correct.<category>`` (image
    counts, as floats like every value, so that the dict logs as metrics)."""
    totals: dict[str, LayerTally] = {}
    absent = 0
    for image in images.values():
        absent += image.absent
        for name, tally in image.layers.items():
            totals.setdefault(name, LayerTally()).add(tally)
    out: dict[str, float | None] = {}
    for name, tally in totals.items():  # insertion order: the attention's layers, bottom-up
        layer = "soft" if name == FINAL_MAP else name
        n = tally.words
        top = (
            {"pointing": tally.hits / n, "mass": tally.mass / n, "area": tally.area / n}
            if n
            else dict.fromkeys(("pointing", "mass", "area"))
        )  # None (JSON null) when no generated word named an object in its image
        out |= {f"{key}.{layer}": value for key, value in top.items()}
        out["object_words"] = float(tally.words)
    out |= top if totals else {}
    out["absent_object_words"] = float(absent)
    return out | _naming(images.values())


def _naming(images: Iterable[ImageGrounding]) -> dict[str, float | None]:
    """The object-naming keys of :func:`summarize`."""
    images = list(images)
    pairs = [(image.named, image.present) for image in images]
    single = [(image.named, image.present) for image in images if image.objects == 1]
    right = sum(named == present for named, present in single)
    out: dict[str, float | None] = {
        "right_object": right / len(single) if single else None,
        "one_object_images": float(len(single)),
    }
    categories = sorted(set[str]().union(*(named | present for named, present in pairs)))
    out |= {f"named.{c}": float(sum(c in named for named, _ in pairs)) for c in categories}
    out |= {f"present.{c}": float(sum(c in present for _, present in pairs)) for c in categories}
    out |= {f"correct.{c}": float(sum(c in named and c in present for named, present in pairs)) for c in categories}
    return out
