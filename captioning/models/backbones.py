"""torchvision ResNets with an attention module (CBAM or SE) in every residual block.

The blocks are torchvision's own (``BasicBlock``, ``Bottleneck``) with one addition: ``attention`` applied to the
residual branch after its last BN and before the identity add, as in the official CBAM code
(arXiv 1807.06521, Fig. 3). With ``attention="none"`` the module is ``nn.Identity`` and the network's parameters
and state-dict keys are exactly torchvision's, so ImageNet weights load into every variant (the attention
tensors are reported as new). ``width`` scales every stage (64 is the standard network) for small CPU models.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torchvision.models import get_weight
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from captioning.errors import CaptioningError
from captioning.models.attention.cbam import block_attention

log = logging.getLogger(__name__)

RESNET_LAYERS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class AttentiveBasicBlock(BasicBlock):
    """torchvision's BasicBlock with ``attention`` between ``bn2`` and the identity add."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attention: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class AttentiveBottleneck(Bottleneck):
    """torchvision's Bottleneck (v1.5: stride on the 3x3) with ``attention`` between ``bn3`` and the add."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attention: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attention(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


class AttentiveResNet(ResNet):
    """torchvision ResNet built from the attentive blocks, with every stage's width scaled by ``width / 64``."""

    def __init__(self, depth: int, *, attention: str = "none", width: int = 64, num_classes: int = 1000) -> None:
        if depth not in RESNET_LAYERS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
        if width < 1 or width % 4:
            raise ValueError(f"width must be a positive multiple of 4, got {width}")
        self.width = width  # read by _make_layer while ResNet.__init__ runs
        block = AttentiveBasicBlock if depth < 50 else AttentiveBottleneck
        super().__init__(block, RESNET_LAYERS[depth], num_classes=num_classes)
        if width != 64:  # ResNet.__init__ hard-codes a 64-channel stem and head; rebuild them at this width
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.fc = nn.Linear(self.inplanes, num_classes)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if isinstance(module, AttentiveBasicBlock | AttentiveBottleneck):
                last_bn = module.bn3 if isinstance(module, Bottleneck) else module.bn2
                module.attention = block_attention(attention, last_bn.num_features)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False) -> nn.Sequential:
        if "layer1" not in self._modules:  # the first stage follows the (scaled) stem
            self.inplanes = self.width
        return super()._make_layer(block, planes * self.width // 64, blocks, stride, dilate)

    @property
    def out_channels(self) -> int:
        """Channels of the ``layer4`` output."""
        return self.inplanes


def cbam_resnet(
    depth: int, attention: str | None = None, num_classes: int = 1000, *, width: int = 64
) -> AttentiveResNet:
    """A torchvision-layout ResNet-``depth`` with ``attention`` (None, ``"se"``, ``"cbam"``) in every block."""
    return AttentiveResNet(depth, attention=attention or "none", width=width, num_classes=num_classes)


def load_imagenet_weights(model: AttentiveResNet, depth: int, weights: str) -> list[str]:
    """Loads torchvision ImageNet weights (e.g. ``IMAGENET1K_V1``) into every matching tensor.

    Returns:
        The names of the model's tensors that the weights do not hold (the attention modules).

    Raises:
        CaptioningError: the weights name is unknown or the file cannot be downloaded (no internet).
    """
    if model.width != 64:
        raise CaptioningError(f"ImageNet weights exist only for width 64, not {model.width}")
    try:
        entry = get_weight(f"ResNet{depth}_Weights.{weights}")
    except (ValueError, KeyError) as e:
        raise CaptioningError(f"unknown torchvision weights ResNet{depth}_Weights.{weights}") from e
    try:
        state = entry.get_state_dict(progress=True, check_hash=True)
    except OSError as e:  # urllib's URLError is an OSError
        reason = getattr(e, "reason", e)
        raise CaptioningError(
            f"cannot download {entry.url} ({reason}); without internet, put the file in "
            f"{torch.hub.get_dir()}/checkpoints/ or train with weights: null"
        ) from e
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise CaptioningError(f"ImageNet weights hold tensors this model lacks: {unexpected[:5]}")
    log.info("loaded %s: %d tensors, %d new (attention) tensors", entry, len(state), len(missing))
    return missing
