"""Spatial attention figures: the image, then one panel per generated word and attended layer with its map overlaid.

A word's map (h x w, e.g. 3 x 3 for a 96-pixel image through a ResNet) is upsampled bilinearly to the image size,
as in Xu et al. 2015 (arXiv 1502.03044), Fig. 2-3, and drawn as a translucent heat map over the image. Models with
several attended layers (multi-layer SCA-CNN, Chen et al. 2017, Fig. 5) get one row of panels per layer.

The figure is laid out on a fixed grid (:class:`Grid`) without ``tight_layout``, so the PNG's size and each panel's
pixel box are known in advance (the tests crop panels with it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from captioning.viz import save_figure

PANEL = 1.6  # inches per panel side
TITLE = 0.5  # inches above the panels for the caption
LABEL = 0.3  # inches above each panel for its word
DPI = 80
HEAT_ALPHA = 0.5  # opacity of the heat map over the image
COLORMAP = "jet"


def upsample_maps(alphas: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """alphas (T, N) with N = h*w square -> (T, H, W) maps, bilinear, divided by the largest weight of all words.

    One scale for every word keeps a flat (uniform) map flat instead of stretching noise to full contrast.
    """
    side = math.isqrt(alphas.shape[1])
    if side * side != alphas.shape[1]:
        raise ValueError(f"attention over {alphas.shape[1]} locations is not a square grid")
    grid = alphas.detach().float().reshape(-1, 1, side, side)  # (T, 1, h, w)
    maps = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[:, 0]  # (T, H, W)
    return (maps / maps.max().clamp_min(1e-12)).cpu().numpy()


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """image (H, W, 3) uint8, heat (H, W) in [0, 1] -> (H, W, 3) uint8: the image under the colored heat map.

    The same blend as the matplotlib figures (``imshow`` of the heat map at ``HEAT_ALPHA``), done in numpy for the
    HTML report's thousands of thumbnails, where a matplotlib figure each would take most of the time.
    """
    colors = matplotlib.colormaps[COLORMAP](np.clip(heat, 0.0, 1.0))[..., :3]  # (H, W, 3) in [0, 1]
    blend = (1.0 - HEAT_ALPHA) * image.astype(np.float32) / 255.0 + HEAT_ALPHA * colors
    return (blend * 255.0).round().astype(np.uint8)


@dataclass(frozen=True)
class Grid:
    """Where panels go: ``rows`` x ``columns`` squares of ``PANEL`` inches, each with a label strip above it, under
    a title strip. Pixel boxes are exact because the figure is saved at ``DPI`` without tight cropping."""

    rows: int
    columns: int

    @property
    def size_inches(self) -> tuple[float, float]:
        return self.columns * PANEL, TITLE + self.rows * (PANEL + LABEL)

    @property
    def size_pixels(self) -> tuple[int, int]:
        """(width, height) of the saved PNG."""
        width, height = self.size_inches
        return round(width * DPI), round(height * DPI)

    def rect(self, row: int, column: int) -> tuple[float, float, float, float]:
        """Axes rectangle (left, bottom, width, height) in figure fractions."""
        width, height = self.size_inches
        top = TITLE + row * (PANEL + LABEL) + LABEL  # inches from the top edge to the panel's top
        return column * PANEL / width, 1.0 - (top + PANEL) / height, PANEL / width, PANEL / height

    def box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """Pixel box (left, top, right, bottom) of a panel in the saved PNG, for PIL's ``crop``."""
        top = (TITLE + row * (PANEL + LABEL) + LABEL) * DPI
        left = column * PANEL * DPI
        return round(left), round(top), round(left + PANEL * DPI), round(top + PANEL * DPI)


def word_grid(words: int, layers: int, columns: int) -> tuple[Grid, list[tuple[int, int]]]:
    """The grid for the input panel and ``words`` x ``layers`` word panels, ``columns`` per row; returns it and
    the (row, column) of word panel ``w`` of layer ``l`` at index ``l * words + w``. Words wrap after
    ``columns - 1`` panels (the first column holds the input image in each block of rows)."""
    per_row = max(1, columns - 1)
    blocks = math.ceil(words / per_row)  # rows of words
    grid = Grid(rows=blocks * layers, columns=min(columns, words + 1))
    places = [(w // per_row * layers + layer, 1 + w % per_row) for layer in range(layers) for w in range(words)]
    return grid, places


def plot_word_attention(
    image: np.ndarray,
    words: Sequence[str],
    maps: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    columns: int = 9,
) -> Path:
    """Writes a PNG: the caption as the title; per attended layer a row of panels, each word over its map.

    Args:
        image: (H, W, 3) uint8 RGB, as the model saw it (resized).
        words: the generated words (``<eos>`` may be the last).
        maps: layer name -> (T, N) spatial attention weights, one row per word.
        path: the PNG to write.
        columns: panels per row, the input image's included; longer captions wrap.
    """
    if not maps:
        raise ValueError("no spatial attention maps to draw")
    for name, alphas in maps.items():
        if len(words) != alphas.shape[0]:
            raise ValueError(f"{len(words)} words but {alphas.shape[0]} attention maps for {name}")
    grid, places = word_grid(len(words), len(maps), columns)
    fig = Figure(figsize=grid.size_inches, dpi=DPI)
    for block in range(0, grid.rows, len(maps)):
        for layer, name in enumerate(maps):
            ax = fig.add_axes(grid.rect(block + layer, 0))
            ax.imshow(image)
            ax.set_title(name if len(maps) > 1 else "input", fontsize=8)
            ax.axis("off")
    heats = [upsample_maps(alphas, image.shape[:2]) for alphas in maps.values()]  # each (T, H, W)
    for index, (row, column) in enumerate(places):
        layer, w = divmod(index, len(words))
        ax = fig.add_axes(grid.rect(row, column))
        ax.imshow(image)
        ax.imshow(heats[layer][w], cmap=COLORMAP, alpha=HEAT_ALPHA, vmin=0.0, vmax=1.0)
        ax.set_title(words[w], fontsize=10)
        ax.axis("off")
    caption = " ".join(w for w in words if w != "<eos>")
    fig.text(0.5, 1.0 - 0.5 * TITLE / grid.size_inches[1], caption, ha="center", va="center", fontsize=11)
    return save_figure(fig, path, tight=False)  # saved at the figure's own dpi (DPI)
