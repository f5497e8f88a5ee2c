"""CNN encoder: a (CBAM/SE) ResNet up to ``layer4``, returning the feature grid the decoder attends over."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from captioning.models.backbones import AttentiveResNet, load_imagenet_weights


class ResNetEncoder(nn.Module):
    """ResNet-``depth`` feature extractor (classifier head dropped).

    Args:
        depth: 18, 34, 50, 101 or 152.
        attention: backbone attention in every residual block: ``none``, ``se`` or ``cbam``.
        weights: torchvision ImageNet weights name (``IMAGENET1K_V1``, ``IMAGENET1K_V2``) or None for random init.
        width: base width (64 = standard; smaller for fast CPU models, random init only).
        trainable: whether the backbone is fine-tuned (False freezes it, BN statistics included).
    """

    def __init__(
        self,
        depth: int,
        *,
        attention: Literal["none", "se", "cbam"] = "none",
        weights: str | None = None,
        width: int = 64,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = AttentiveResNet(depth, attention=attention, width=width)
        if weights:
            load_imagenet_weights(self.backbone, depth, weights)
        del self.backbone.fc  # the encoder stops at layer4 (the classifier is never used)
        self.trainable = trainable
        self.backbone.requires_grad_(trainable)
        self.out_channels = self.backbone.out_channels

    def train(self, mode: bool = True) -> ResNetEncoder:
        super().train(mode)
        if not self.trainable:  # a frozen backbone keeps its BN running statistics
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> layer4 features (B, C, H/32, W/32)."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))  # (B, w, H/4, W/4)
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))  # (B, C, H/32, W/32)
