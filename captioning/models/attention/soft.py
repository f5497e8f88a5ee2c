"""Show-Attend-Tell soft attention and the mean-pooling baseline: decoder attention over the feature grid.

Xu et al., "Show, Attend and Tell", ICML 2015, arXiv 1502.03044, section 3.1.2 and 4.2:

    e_ti    = w^T tanh(W_a a_i + W_h h_{t-1})         (eq. 4, the MLP attention of Bahdanau et al.)
    alpha_t = softmax_i(e_t)                          (eq. 5, over the N locations)
    z_t     = beta_t * sum_i alpha_ti a_i,   beta_t = sigmoid(f_beta(h_{t-1}))   (eq. 6 + section 4.2.1 gate)

The paper's gate beta_t is a scalar per step; we keep that (a widely used port gates per channel). W_a a_i does
not depend on t, so ``prepare`` computes it once per image and every step reuses it.

The decoder attention protocol (shared with multi-layer SCA-CNN):
    ``prepare(encoder, images)`` runs the CNN once per image and returns a ``memory`` dict of batch-first tensors,
    always with ``pooled`` (B, C) for the LSTM's initial state; beam search repeats it along dim 0 without knowing
    what else is in it. It is ``from_features(encoder, features(encoder, images))``:
    ``features(encoder, images)`` is what the attention reads from the CNN below the layers it recomputes (here the
    final map; for SCA the last block's input and lowest attended map): what ``captioning extract`` stores for a
    frozen encoder. ``from_features(encoder, features)`` makes the memory from it.
    ``forward(memory, hidden, encoder)`` returns the context (B, C) and the step's attention weights
    (:class:`~captioning.models.attention.weights.AttentionWeights`, flat: ``alpha`` (B, N), spatial, over
    locations). The typed interface and the registry of attentions by name: :mod:`captioning.models.attention.registry`.
"""

from __future__ import annotations

import torch
from torch import nn

from captioning.models.attention.weights import FINAL_MAP, AttentionWeights
from captioning.models.encoder import Encoder


class _FinalMap(nn.Module):
    """The part of the protocol shared by attentions over the final map (``none``, ``soft``)."""

    def features(self, encoder: Encoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) -> {``map``: the final map (B, C, h, w)}."""
        return {"map": encoder(images)}

    def prepare(self, encoder: Encoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.from_features(encoder, self.features(encoder, images))

    def from_features(self, encoder: Encoder, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def _grid(features: dict[str, torch.Tensor]) -> torch.Tensor:
    return features["map"].flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, N, C)


class MeanAttention(_FinalMap):
    """The ``none`` baseline: the context is the mean feature vector, the same at every step (no weights)."""

    def from_features(self, encoder: Encoder, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{``map``} -> memory with ``pooled`` (B, C), the mean layer4 feature."""
        return {"pooled": _grid(features).mean(dim=1)}

    def forward(
        self, memory: dict[str, torch.Tensor], hidden: torch.Tensor, encoder: Encoder
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return memory["pooled"], {}


class SoftAttention(_FinalMap):
    """Show-Attend-Tell soft attention with the scalar gate beta_t (see the module docstring)."""

    def __init__(self, encoder_dim: int, hidden_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(encoder_dim, attn_dim)  # W_a (with bias)
        self.hidden_proj = nn.Linear(hidden_dim, attn_dim)  # W_h
        self.score = nn.Linear(attn_dim, 1)  # w
        self.gate = nn.Linear(hidden_dim, 1)  # f_beta

    def from_features(self, encoder: Encoder, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{``map``} -> memory: ``features`` a_i (B, N, C), ``projected`` W_a a_i (B, N, A), ``pooled`` (B, C)."""
        grid = _grid(features)  # (B, N, C)
        return {"features": grid, "projected": self.feature_proj(grid), "pooled": grid.mean(dim=1)}

    def forward(
        self, memory: dict[str, torch.Tensor], hidden: torch.Tensor, encoder: Encoder
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """memory, h_{t-1} (B, D) -> context z_t (B, C), {"alpha": alpha_t (B, N)}."""
        energy = torch.tanh(memory["projected"] + self.hidden_proj(hidden)[:, None, :])  # (B, N, A)
        alphas = torch.softmax(self.score(energy).squeeze(-1), dim=1)  # (B, N), eq. 5: over locations
        context = torch.einsum("bn,bnc->bc", alphas, memory["features"])  # (B, C)
        weights = AttentionWeights(spatial={FINAL_MAP: alphas}).flat()  # {"alpha": (B, N)}
        return torch.sigmoid(self.gate(hidden)) * context, weights  # beta_t (B, 1) * context
