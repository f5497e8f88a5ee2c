"""One captioned image and the figures drawn for it: what ``captioning visualize``, the dashboards' validation samples,
the HTML report and the notebooks share.

A generation's attention arrives as ``{name: (B, T, ...)}``: ``alpha`` (soft attention) or ``alpha.<layer>``
(SCA-CNN, per attended layer) hold spatial weights (B, T, N) over the h x w grid; ``beta.<layer>`` hold SCA-CNN's
channel weights (B, T, C).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from captioning.decoding import Generation
from captioning.models.attention.weights import FINAL_MAP, AttentionWeights
from captioning.viz.attention import plot_word_attention
from captioning.viz.channels import plot_channel_attention


@dataclass
class Captioned:
    """One image's caption with its attention, ready to draw."""

    caption: str
    words: list[str]  # the caption's words, then "<eos>" where the search reached it: one per attention row
    attention: dict[str, torch.Tensor]  # name -> (T, N) spatial or (T, C) channel weights
    pixels: np.ndarray  # (H, W, 3) uint8, the image as the model saw it

    @property
    def spatial(self) -> dict[str, torch.Tensor]:
        """Attended layer -> (T, N) spatial weights (labelled ``attention`` for soft attention's single map)."""
        return _labelled(AttentionWeights.of(self.attention).spatial)

    @property
    def channel(self) -> dict[str, torch.Tensor]:
        """Attended layer -> (T, C) channel weights (SCA-CNN with a channel step)."""
        return _labelled(AttentionWeights.of(self.attention).channel)


def _labelled(by_layer: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"attention" if layer == FINAL_MAP else layer: weights for layer, weights in by_layer.items()}


def split_generation(captions: Sequence[str], generation: Generation, pixels: np.ndarray) -> list[Captioned]:
    """A batch's captions, its :class:`Generation` and pixels (B, H, W, 3) -> one :class:`Captioned` per image.

    Each keeps the attention rows of its words and of the ``<eos>`` step when the search reached it.
    """
    out = []
    for row, caption in enumerate(captions):
        words = caption.split()
        steps = min(len(words) + 1, generation.tokens.shape[1])
        attention = {name: weights[row, :steps].detach().cpu() for name, weights in generation.attention.items()}
        out.append(Captioned(caption, [*words, "<eos>"][:steps], attention, pixels[row]))
    return out


def draw(item: Captioned, stem: str | Path, *, top_k: int = 5) -> list[Path]:
    """Writes ``<stem>_attention.png`` (spatial maps per word and layer) and, for channel attention,
    ``<stem>_channels.png``; returns the files written (none for a model without decoder attention)."""
    stem = Path(stem)
    written = []
    if item.spatial:
        written.append(plot_word_attention(item.pixels, item.words, item.spatial, f"{stem}_attention.png"))
    if item.channel:
        written.append(plot_channel_attention(item.words, item.channel, f"{stem}_channels.png", top_k=top_k))
    return written
