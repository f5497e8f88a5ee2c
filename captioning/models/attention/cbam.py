"""Self-gating attention inside the backbone: CBAM and SE.

CBAM: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018, arXiv 1807.06521, section 3.
SE: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, arXiv 1709.01507.

Layout follows the official CBAM code (../shared/REFERENCE.md section 1): biased MLP with reduction r = 16,
channel pool order [max; mean] for the spatial gate, a bias-free 7x7 conv followed by BatchNorm2d(1), and the
optional zero-init of that BN's weight so every spatial gate starts at sigmoid(0) = 0.5. Modules map
x -> x (same shape).
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(channels: int, reduction: int) -> nn.Sequential:
    hidden = max(1, channels // reduction)
    return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))


class ChannelAttention(nn.Module):
    """M_c(F) = sigmoid(MLP(AvgPool_hw(F)) + MLP(MaxPool_hw(F))), shared MLP C -> C/r -> C (CBAM eq. 2)."""

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = _mlp(channels, reduction)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> M_c (B, C) in (0, 1). The shared MLP runs once, on both pooled vectors stacked."""
        pooled = torch.stack([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))])  # (2, B, C): AvgPool, MaxPool
        return torch.sigmoid(self.mlp(pooled).sum(dim=0))  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), x scaled by the channel gate."""
        return x * self.gate(x)[:, :, None, None]


class SpatialAttention(nn.Module):
    """M_s(F) = sigmoid(BN(conv7x7([MaxPool_c(F); AvgPool_c(F)]))) (CBAM eq. 3; BN as in the official code)."""

    def __init__(self, *, kernel_size: int = 7, zero_init: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        if zero_init:
            nn.init.zeros_(self.bn.weight)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> M_s (B, 1, H, W) in (0, 1)."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return torch.sigmoid(self.bn(self.conv(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), x scaled by the spatial gate."""
        return x * self.gate(x)


class CBAM(nn.Module):
    """F' = M_c(F) * F, then F'' = M_s(F') * F' (CBAM eq. 1: channel first, then spatial)."""

    def __init__(self, channels: int, *, reduction: int = 16, kernel_size: int = 7, zero_init: bool = True) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction=reduction)
        self.spatial = SpatialAttention(kernel_size=kernel_size, zero_init=zero_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.spatial(self.channel(x))


class SE(nn.Module):
    """Squeeze-and-excitation: x * sigmoid(MLP(AvgPool_hw(x))) (SE eq. 2-3, biased MLP, r = 16)."""

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = _mlp(channels, reduction)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the channel gate (B, C) in (0, 1)."""
        return torch.sigmoid(self.mlp(x.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return x * self.gate(x)[:, :, None, None]


def block_attention(kind: str, channels: int, *, reduction: int = 16) -> nn.Module:
    """Registry of backbone attention by name: ``none`` (identity), ``se``, ``cbam``."""
    if kind == "none":
        return nn.Identity()
    if kind == "se":
        return SE(channels, reduction=reduction)
    if kind == "cbam":
        return CBAM(channels, reduction=reduction)
    raise ValueError(f"unknown backbone attention {kind!r}; choose none, se or cbam")
