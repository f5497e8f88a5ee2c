"""Channel-wise attention figures: SCA-CNN's beta over words x channels, and each word's top-k channels.

SCA-CNN (Chen et al. 2017, arXiv 1611.05594, eq. 6-7) re-weights the channels of each attended layer per word with
beta_t = softmax(W'_i b_t + b'_i) over the C channels, so a row of beta sums to 1 and a flat row is 1/C everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from captioning.viz import save_figure


def top_channels(betas: torch.Tensor, k: int) -> torch.Tensor:
    """betas (T, C) -> (T, k) channel indices, each word's k largest weights first."""
    return betas.topk(min(k, betas.shape[1]), dim=1).indices


def plot_channel_attention(
    words: Sequence[str], betas: Mapping[str, torch.Tensor], path: str | Path, *, top_k: int = 5
) -> Path:
    """Writes a PNG with one row per attended layer: left, beta as a heat map over words x all channels; right,
    the channels that are in some word's top ``top_k``, with each word's own top-k marked by a dot.

    Args:
        words: the generated words (``<eos>`` may be the last).
        betas: layer name -> (T, C) channel weights, one row per word.
        path: the PNG to write.
        top_k: channels listed per word.
    """
    if not betas:
        raise ValueError("no channel attention weights to draw")
    height = 1.2 + 0.22 * len(words)
    fig = Figure(figsize=(13, height * len(betas)), dpi=80)
    axes = fig.subplots(len(betas), 2, squeeze=False)
    for (left, right), (name, weights) in zip(axes, betas.items(), strict=True):
        if len(words) != weights.shape[0]:
            raise ValueError(f"{len(words)} words but {weights.shape[0]} channel weights for {name}")
        weights = weights.detach().float().cpu()  # (T, C)
        image = left.imshow(weights.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        left.set_yticks(range(len(words)), words, fontsize=8)
        left.set_xlabel(f"channel (of {weights.shape[1]})")
        left.set_title(f"{name}: beta over words x channels", fontsize=10)
        fig.colorbar(image, ax=left, fraction=0.03)

        top = top_channels(weights, top_k)  # (T, k)
        chosen = sorted(set(top.flatten().tolist()))  # the union, by channel index
        column = {channel: i for i, channel in enumerate(chosen)}
        right.imshow(weights[:, chosen].numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        rows, cols = zip(*((t, column[c]) for t in range(len(words)) for c in top[t].tolist()), strict=True)
        right.scatter(cols, rows, s=10, c="white", edgecolors="black", linewidths=0.4)
        right.set_xticks(range(len(chosen)), [str(c) for c in chosen], fontsize=6, rotation=90)
        right.set_yticks(range(len(words)), words, fontsize=8)
        right.set_title(f"top {top.shape[1]} channels per word (dots)", fontsize=10)
    return save_figure(fig, path)
