"""Decoder attentions by name: the registry that ``DecoderSpec.attention`` (``--model.decoder.attention``) reads.

A new decoder attention is one file and one line: a module with the interface below, and
``DECODER_ATTENTIONS["name"] = Factory`` (tests/models/attention/test_registry.py trains a toy one that way).
Backbone attentions (inside every residual block) have their own registry,
:data:`captioning.models.cbam.BACKBONE_ATTENTIONS`.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from captioning.models.attention.multilayer import MultiLayerSCA
from captioning.models.attention.soft import MeanAttention, SoftAttention
from captioning.models.encoder import Encoder

Memory = dict[str, torch.Tensor]  # batch-first tensors, one row per image (or beam); always with ``pooled`` (B, C)


class DecoderAttention(Protocol):
    """What the decoder and ``captioning extract`` call (see :mod:`captioning.models.attention.soft` for the flow).

    ``features(encoder, images)``: images (B, 3, H, W) -> what the attention reads from the CNN below the layers it
    recomputes (the maps ``captioning extract`` stores). ``from_features(encoder, features)`` -> the memory;
    ``prepare(encoder, images)`` is the two in one. ``forward(memory, hidden, encoder)``: the memory and h_{t-1}
    (B, D) -> the context (B, encoder.out_channels) and the step's weights,
    :meth:`AttentionWeights.flat() <captioning.models.attention.weights.AttentionWeights.flat>`.
    """

    def features(self, encoder: Encoder, images: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def from_features(self, encoder: Encoder, features: dict[str, torch.Tensor]) -> Memory: ...

    def prepare(self, encoder: Encoder, images: torch.Tensor) -> Memory: ...

    def forward(
        self, memory: Memory, hidden: torch.Tensor, encoder: Encoder
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


class DecoderAttentionFactory(Protocol):
    """Builds an attention for ``encoder`` (its sizes), an LSTM of size ``hidden_dim`` and an attention MLP of size
    ``attn_dim``; ``options``: attention-specific settings (SCA-CNN's ``order`` and ``layers``)."""

    def __call__(self, encoder: Encoder, *, hidden_dim: int, attn_dim: int, **options: Any) -> nn.Module: ...


def _mean(encoder: Encoder, *, hidden_dim: int, attn_dim: int) -> nn.Module:
    return MeanAttention()


def _soft(encoder: Encoder, *, hidden_dim: int, attn_dim: int) -> nn.Module:
    return SoftAttention(encoder.out_channels, hidden_dim, attn_dim)


DECODER_ATTENTIONS: dict[str, DecoderAttentionFactory] = {
    "none": _mean,  # the mean feature vector at every step (no weights)
    "soft": _soft,  # Show-Attend-Tell (Xu et al. 2015, section 3.1.2)
    "sca": MultiLayerSCA,  # multi-layer SCA-CNN (Chen et al. 2017, section 3)
}


def decoder_attention(kind: str, encoder: Encoder, *, hidden_dim: int, attn_dim: int, **options: Any) -> nn.Module:
    """The registered attention ``kind``, built for ``encoder``."""
    if kind not in DECODER_ATTENTIONS:
        raise ValueError(f"unknown decoder attention {kind!r}; choose one of {sorted(DECODER_ATTENTIONS)}")
    return DECODER_ATTENTIONS[kind](encoder, hidden_dim=hidden_dim, attn_dim=attn_dim, **options)
