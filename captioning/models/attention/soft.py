"""Show-Attend-Tell soft attention and the mean-pooling baseline: decoder attention over the feature grid.

Xu et al., "Show, Attend and Tell", ICML 2015, arXiv 1502.03044, section 3.1.2 and 4.2:

    e_ti    = w^T tanh(W_a a_i + W_h h_{t-1})         (eq. 4, the MLP attention of Bahdanau et al.)
    alpha_t = softmax_i(e_t)                          (eq. 5, over the N locations)
    z_t     = beta_t * sum_i alpha_ti a_i,   beta_t = sigmoid(f_beta(h_{t-1}))   (eq. 6 + section 4.2.1 gate)

The paper's gate beta_t is a scalar per step; we keep that (a widely used port gates per channel). W_a a_i does
not depend on t, so ``prepare`` computes it once per image and every step reuses it.

Every decoder attention maps a ``memory`` dict of batch-first tensors and h_{t-1} to (context, weights); beam
search can then reorder or repeat the memory along dim 0 without knowing what is in it.
"""

from __future__ import annotations

import torch
from torch import nn


class MeanAttention(nn.Module):
    """The ``none`` baseline: the context is the mean feature vector; alpha is uniform."""

    def prepare(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """features (B, N, C) -> memory with ``features`` and their mean ``pooled`` (B, C)."""
        return {"features": features, "pooled": features.mean(dim=1)}

    def forward(self, memory: dict[str, torch.Tensor], hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = memory["features"]  # (B, N, C)
        alphas = features.new_full(features.shape[:2], 1.0 / features.shape[1])  # (B, N)
        return memory["pooled"], alphas


class SoftAttention(nn.Module):
    """Show-Attend-Tell soft attention with the scalar gate beta_t (see the module docstring)."""

    def __init__(self, encoder_dim: int, hidden_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(encoder_dim, attn_dim)  # W_a (with bias)
        self.hidden_proj = nn.Linear(hidden_dim, attn_dim)  # W_h
        self.score = nn.Linear(attn_dim, 1)  # w
        self.gate = nn.Linear(hidden_dim, 1)  # f_beta

    def prepare(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """features (B, N, C) -> memory with ``features`` and ``projected`` = W_a a_i (B, N, A)."""
        return {"features": features, "projected": self.feature_proj(features)}

    def forward(self, memory: dict[str, torch.Tensor], hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory, h_{t-1} (B, D) -> context z_t (B, C), alpha_t (B, N)."""
        energy = torch.tanh(memory["projected"] + self.hidden_proj(hidden)[:, None, :])  # (B, N, A)
        alphas = torch.softmax(self.score(energy).squeeze(-1), dim=1)  # (B, N), eq. 5: over locations
        context = torch.einsum("bn,bnc->bc", alphas, memory["features"])  # (B, C)
        return torch.sigmoid(self.gate(hidden)) * context, alphas  # beta_t (B, 1) * context


def decoder_attention(kind: str, *, encoder_dim: int, hidden_dim: int, attn_dim: int) -> nn.Module:
    """Registry of decoder attention by name: ``none`` (mean pooling), ``soft`` (Show-Attend-Tell)."""
    if kind == "none":
        return MeanAttention()
    if kind == "soft":
        return SoftAttention(encoder_dim, hidden_dim, attn_dim)
    raise ValueError(f"unknown decoder attention {kind!r}; choose none or soft")
