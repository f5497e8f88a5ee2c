"""Attention figures: the image, then one panel per generated word with its spatial attention map overlaid.

The map of each word (h x w, e.g. 3 x 3 for a 96-pixel image through a ResNet) is upsampled bilinearly to the
image size, as in Xu et al. 2015, Fig. 2-3, and drawn as a translucent heat map over the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is needed (or available on servers)
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F


def upsample_maps(alphas: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """alphas (T, N) with N = h*w square -> (T, H, W) maps, bilinear, divided by the largest weight of all words.

    One scale for every word keeps a flat (uniform) map flat instead of stretching noise to full contrast.
    """
    side = math.isqrt(alphas.shape[1])
    if side * side != alphas.shape[1]:
        raise ValueError(f"attention over {alphas.shape[1]} locations is not a square grid")
    grid = alphas.float().view(-1, 1, side, side)  # (T, 1, h, w)
    maps = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[:, 0]  # (T, H, W)
    return (maps / maps.max().clamp_min(1e-12)).cpu().numpy()


def plot_word_attention(
    image: np.ndarray, words: Sequence[str], alphas: torch.Tensor, path: str | Path, *, columns: int = 6
) -> Path:
    """Writes a PNG: the image with its caption, then each word over its attention map.

    Args:
        image: (H, W, 3) uint8 RGB, as the model saw it (resized).
        words: the generated words (``<eos>`` may be the last).
        alphas: (T, N) attention weights, one row per word.
        path: the PNG to write.
        columns: panels per row.
    """
    if len(words) != alphas.shape[0]:
        raise ValueError(f"{len(words)} words but {alphas.shape[0]} attention maps")
    maps = upsample_maps(alphas, image.shape[:2])  # (T, H, W)
    panels = len(words) + 1
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("input", fontsize=9)
    for ax, word, heat in zip(axes.flat[1:], words, maps, strict=False):
        ax.imshow(image)
        ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        ax.set_title(word, fontsize=10)
    caption = " ".join(w for w in words if w != "<eos>")
    fig.suptitle(caption, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
