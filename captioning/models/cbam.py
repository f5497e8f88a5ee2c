"""Self-gating attention inside the backbone: CBAM and SE.

CBAM: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018, arXiv 1807.06521, section 3.
SE: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, arXiv 1709.01507.

Layout follows CBAM (Woo et al., ECCV 2018, arXiv 1807.06521, section 3) and its official code
(github.com/Jongchan/attention-module): biased MLP with reduction r = 16,
channel pool order [max; mean] for the spatial gate, a bias-free 7x7 conv followed by BatchNorm2d(1), and the
optional zero-init of that BN's weight so every spatial gate starts at sigmoid(0) = 0.5. Modules map
x -> x (same shape).

Grafted onto a pretrained network (``identity_init=True``, what the encoders use with ImageNet weights), a gate is
2 * sigmoid(z) with z = 0 at initialization (the MLP's last layer and the spatial BN's weight zeroed), so every gate
starts at exactly 1 and the network computes what it was trained to compute. Deviation from CBAM and SE (their gates
lie in (0, 1) and start near 0.5): with gates of about 0.5 each, every pretrained residual branch would enter its
addition at about a quarter of its trained size (0.244-0.254 measured on ResNet-152). Gradients at z = 0 are those
of the paper's form times 2; the parameter count is the same. Training from scratch keeps the papers' gates.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


def _mlp(channels: int, reduction: int, *, identity_init: bool = False) -> nn.Sequential:
    hidden = max(1, channels // reduction)
    mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
    if identity_init:  # MLP(.) = 0 at initialization: the gate starts at 2 * sigmoid(0) = 1
        nn.init.zeros_(mlp[2].weight)
        nn.init.zeros_(mlp[2].bias)
    return mlp


def _gate_scale(identity_init: bool) -> float:
    """2 for a gate grafted onto a pretrained network (2 * sigmoid(0) = 1, see the module docstring), else 1."""
    return 2.0 if identity_init else 1.0


class ChannelAttention(nn.Module):
    """M_c(F) = sigmoid(MLP(AvgPool_hw(F)) + MLP(MaxPool_hw(F))), shared MLP C -> C/r -> C (CBAM eq. 2); twice
    that, starting at exactly 1, with ``identity_init`` (module docstring)."""

    def __init__(self, channels: int, *, reduction: int = 16, identity_init: bool = False) -> None:
        super().__init__()
        self.mlp = _mlp(channels, reduction, identity_init=identity_init)
        self.scale = _gate_scale(identity_init)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> M_c (B, C) in (0, 1) (or (0, 2)). The shared MLP runs once, on both pooled vectors."""
        pooled = torch.stack([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))])  # (2, B, C): AvgPool, MaxPool
        gate = torch.sigmoid(self.mlp(pooled).sum(dim=0))  # (B, C)
        return gate if self.scale == 1.0 else gate * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), x scaled by the channel gate."""
        return x * self.gate(x)[:, :, None, None]


class SpatialAttention(nn.Module):
    """M_s(F) = sigmoid(BN(conv7x7([MaxPool_c(F); AvgPool_c(F)]))) (CBAM eq. 3; BN as in the official code);
    twice that, starting at exactly 1, with ``identity_init`` (module docstring; it implies ``zero_init``)."""

    def __init__(self, *, kernel_size: int = 7, zero_init: bool = True, identity_init: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        if zero_init or identity_init:  # BN(.) = its bias = 0 whatever the input
            nn.init.zeros_(self.bn.weight)
        self.scale = _gate_scale(identity_init)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> M_s (B, 1, H, W) in (0, 1) (or (0, 2))."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        gate = torch.sigmoid(self.bn(self.conv(pooled)))  # (B, 1, H, W)
        return gate if self.scale == 1.0 else gate * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), x scaled by the spatial gate."""
        return x * self.gate(x)


class CBAM(nn.Module):
    """F' = M_c(F) * F, then F'' = M_s(F') * F' (CBAM eq. 1: channel first, then spatial)."""

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        kernel_size: int = 7,
        zero_init: bool = True,
        identity_init: bool = False,
    ) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction=reduction, identity_init=identity_init)
        self.spatial = SpatialAttention(kernel_size=kernel_size, zero_init=zero_init, identity_init=identity_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.spatial(self.channel(x))


class SE(nn.Module):
    """Squeeze-and-excitation: x * sigmoid(MLP(AvgPool_hw(x))) (SE eq. 2-3, biased MLP, r = 16); twice that gate,
    starting at exactly 1, with ``identity_init`` (module docstring)."""

    def __init__(self, channels: int, *, reduction: int = 16, identity_init: bool = False) -> None:
        super().__init__()
        self.mlp = _mlp(channels, reduction, identity_init=identity_init)
        self.scale = _gate_scale(identity_init)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the channel gate (B, C) in (0, 1) (or (0, 2))."""
        gate = torch.sigmoid(self.mlp(x.mean(dim=(2, 3))))  # (B, C)
        return gate if self.scale == 1.0 else gate * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return x * self.gate(x)[:, :, None, None]


class BackboneAttentionFactory(Protocol):
    """Builds a (B, C, H, W) -> (B, C, H, W) module for a block's ``channels``; ``identity_init``: one that starts
    as the identity (for gates grafted onto pretrained weights, module docstring)."""

    def __call__(self, channels: int, *, reduction: int, identity_init: bool) -> nn.Module: ...


def _identity(channels: int, *, reduction: int, identity_init: bool) -> nn.Module:
    return nn.Identity()


# Backbone attention by name: what ``EncoderSpec.attention`` (``--model.encoder.attention``) reads. A new one is a
# module and one line here (tests/models/attention/test_registry.py registers a toy one from outside).
BACKBONE_ATTENTIONS: dict[str, BackboneAttentionFactory] = {
    "none": _identity,  # torchvision's network exactly (the attention slot is nn.Identity)
    "se": SE,  # squeeze-and-excitation (Hu et al. 2018)
    "cbam": CBAM,  # channel, then spatial (Woo et al. 2018, Fig. 1)
}


def block_attention(kind: str, channels: int, *, reduction: int = 16, identity_init: bool = False) -> nn.Module:
    """The registered backbone attention ``kind`` for a block of ``channels``."""
    if kind not in BACKBONE_ATTENTIONS:
        raise ValueError(f"unknown backbone attention {kind!r}; choose one of {sorted(BACKBONE_ATTENTIONS)}")
    return BACKBONE_ATTENTIONS[kind](channels, reduction=reduction, identity_init=identity_init)
