"""CNN encoder: a (CBAM/SE) ResNet up to ``layer4``, and the split that multi-layer SCA-CNN attention needs.

SCA-CNN (Chen et al., CVPR 2017, arXiv 1611.05594, section 3.1; ../shared/REFERENCE.md section 2) attends several
maps of the CNN and feeds each attended map to the layers above it: V^{l+1} = CNN_{l+1}(X^l). Everything above the
lowest attended map therefore runs again at every word; everything below it runs once per image. As in the official
code (ResNet-152: ``res5c_branch2b`` then ``res5c``), the attendable maps are those of the last residual block:

    level 0  its input (the output of the block before it)           e.g. layer4.1   (2048 x 7 x 7, ResNet-50+)
    level 1  its inner conv output (after BN and ReLU)                e.g. layer4.2.conv2 (512 x 7 x 7)
    level 2  its output = ``layer4``                                  e.g. layer4     (2048 x 7 x 7)

``lift`` pushes a (possibly attended) map one level up, batched over every row it is given (images x beams).
In that block BN always uses its running statistics, so a per-word recomputation never normalizes with the
statistics of attended maps (the official code's Caffe ResNet has fixed BN scale layers too).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

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

    # -- SCA-CNN: the last block, split into attendable levels (see the module docstring) ------------------------
    def level_names(self) -> tuple[str, str, str]:
        """torchvision names of the maps at levels 0, 1, 2."""
        last = len(self.backbone.layer4) - 1
        inner = "conv2" if isinstance(self.backbone.layer4[last], Bottleneck) else "conv1"
        return f"layer4.{last - 1}", f"layer4.{last}.{inner}", "layer4"

    def level_channels(self) -> tuple[int, int, int]:
        block = self.backbone.layer4[-1]
        inner = block.bn2 if isinstance(block, Bottleneck) else block.bn1
        return self.out_channels, inner.num_features, self.out_channels

    def encode_levels(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) -> the un-attended maps at levels 0, 1, 2, each (B, C_l, h, w). Runs once per image."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))  # (B, w, H/4, W/4)
        block_input = b.layer4[:-1](b.layer3(b.layer2(b.layer1(x))))  # (B, C, h, w)
        inner = self.lift(block_input, 0, block_input=block_input)  # (B, C_1, h, w)
        return block_input, inner, self.lift(inner, 1, block_input=block_input)

    def lift(self, x: torch.Tensor, level: int, *, block_input: torch.Tensor) -> torch.Tensor:
        """Pushes a map from ``level`` (0 or 1) to the next level through the last block's own layers.

        Args:
            x: the map at ``level`` (attended or not), (R, C_level, h, w) for R rows (images x beams).
            level: 0 (block input -> inner conv output) or 1 (inner -> block output).
            block_input: the block's input as this step sees it (the attended level-0 map when level 0 is
                attended, else the cached one): the identity shortcut adds it.
        """
        block = self.backbone.layer4[-1]
        if level == 0:
            out = block.relu(_frozen_bn(block.bn1, block.conv1(x)))  # (R, planes, h, w)
            if isinstance(block, Bottleneck):
                out = block.relu(_frozen_bn(block.bn2, block.conv2(out)))  # (R, planes, h, w)
            return out
        if level == 1:
            conv, bn = (block.conv3, block.bn3) if isinstance(block, Bottleneck) else (block.conv2, block.bn2)
            shortcut = block_input if block.downsample is None else block.downsample(block_input)
            return block.relu(block.attention(_frozen_bn(bn, conv(x))) + shortcut)  # (R, C, h, w)
        raise ValueError(f"level must be 0 or 1, got {level}")


def _frozen_bn(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm with its running statistics, in training too (see the module docstring)."""
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
