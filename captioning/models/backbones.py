"""ImageNet backbones in torchvision's layout: ResNets with an attention module (CBAM or SE) in every residual block,
and plain VGGs.

ResNet: the blocks are torchvision's own (``BasicBlock``, ``Bottleneck``) with one addition: ``attention`` applied to
the residual branch after its last BN and before the identity add, as in the official CBAM code
(arXiv 1807.06521, Fig. 3). With ``attention="none"`` the module is ``nn.Identity`` and the network's parameters
and state-dict keys are exactly torchvision's, so ImageNet weights load into every variant (the attention
tensors are reported as new). ``width`` scales every stage (64 is the standard network) for small CPU models.

VGG (Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015,
arXiv 1409.1556, Table 1 configurations D = VGG-16 and E = VGG-19): torchvision's ``features`` / ``avgpool`` /
``classifier`` layout and initialization, optionally with BN after every conv (torchvision's ``vgg*_bn``). No
attention inside: SCA-CNN-VGG (arXiv 1611.05594) attends the plain VGG-19's conv5 maps from the decoder, and the
CBAM paper has no VGG variant. ``width`` scales every conv and the classifier's hidden layer by ``width / 64``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torchvision.models import get_weight
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.vgg import cfgs, make_layers

from captioning.errors import CaptioningError
from captioning.models.cbam import block_attention

log = logging.getLogger(__name__)

RESNET_LAYERS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
VGG_CONFIGS = {16: "D", 19: "E"}  # torchvision's ``cfgs`` keys (arXiv 1409.1556, Table 1)


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
    """torchvision ResNet built from the attentive blocks, with every stage's width scaled by ``width / 64``;
    ``graft``: attention gates that start at exactly 1, for pretrained weights (the network then computes at step 0
    what the plain pretrained network computes; :mod:`captioning.models.cbam`)."""

    def __init__(
        self, depth: int, *, attention: str = "none", width: int = 64, num_classes: int = 1000, graft: bool = False
    ) -> None:
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
                module.attention = block_attention(attention, last_bn.num_features, identity_init=graft)

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


class VGG(nn.Module):
    """torchvision's VGG-``depth`` (same state-dict keys and init), every width scaled by ``width / 64``.

    Args:
        depth: 16 or 19.
        batch_norm: BN after every conv (torchvision's ``vgg16_bn`` / ``vgg19_bn``).
        width: channels of the first stage (64 = standard); the stages have width x (1, 2, 4, 8, 8).
        num_classes: classifier outputs; None builds no ``avgpool`` and ``classifier`` (a feature extractor: at
            width 64 the classifier holds 120M of the 138M parameters, and initializing it takes seconds).
    """

    def __init__(
        self, depth: int, *, batch_norm: bool = False, width: int = 64, num_classes: int | None = 1000
    ) -> None:
        super().__init__()
        if depth not in VGG_CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {depth}")
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        self.width, self.batch_norm = width, batch_norm
        config = [v if v == "M" else int(v) * width // 64 for v in cfgs[VGG_CONFIGS[depth]]]
        self.features = make_layers(config, batch_norm=batch_norm)
        self.out_channels = 8 * width  # conv5: 512 at width 64
        self.classifier: nn.Sequential | None = None
        if num_classes is not None:
            hidden = 64 * width  # 4096 at width 64
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(self.out_channels * 7 * 7, hidden),
                nn.ReLU(True),
                nn.Dropout(),
                nn.Linear(hidden, hidden),
                nn.ReLU(True),
                nn.Dropout(),
                nn.Linear(hidden, num_classes),
            )
        for module in self.modules():  # torchvision's VGG init
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> logits (B, num_classes), or the features (B, C, H/32, W/32) without a classifier."""
        features = self.features(images)  # (B, 8w, H/32, W/32)
        if self.classifier is None:
            return features
        return self.classifier(self.avgpool(features).flatten(1))  # (B, 8w, 7, 7) -> (B, 8w * 49) -> (B, classes)


def load_imagenet_weights(model: AttentiveResNet | VGG, depth: int, weights: str) -> list[str]:
    """Loads torchvision ImageNet weights (e.g. ``IMAGENET1K_V1``) into every matching tensor.

    The weights are torchvision's ``ResNet{depth}_Weights``, ``VGG{depth}_Weights`` or ``VGG{depth}_BN_Weights``.

    Returns:
        The names of the model's tensors that the weights do not hold (the attention modules; none for VGG).

    Raises:
        CaptioningError: the weights name is unknown or the file cannot be downloaded (no internet).
    """
    if model.width != 64:
        raise CaptioningError(f"ImageNet weights exist only for width 64, not {model.width}")
    if isinstance(model, VGG):
        family = f"VGG{depth}_BN_Weights" if model.batch_norm else f"VGG{depth}_Weights"
    else:
        family = f"ResNet{depth}_Weights"
    try:
        entry = get_weight(f"{family}.{weights}")
    except (ValueError, KeyError) as e:
        raise CaptioningError(f"unknown torchvision weights {family}.{weights}") from e
    try:
        state = entry.get_state_dict(progress=True, check_hash=True)
    except OSError as e:  # urllib's URLError is an OSError
        reason = getattr(e, "reason", e)
        raise CaptioningError(
            f"cannot download {entry.url} ({reason}); without internet, put the file in "
            f"{torch.hub.get_dir()}/checkpoints/ or train with weights: null"
        ) from e
    if isinstance(model, VGG) and model.classifier is None:  # a feature extractor skips the classifier's tensors
        state = {name: tensor for name, tensor in state.items() if not name.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise CaptioningError(f"ImageNet weights hold tensors this model lacks: {unexpected[:5]}")
    log.info("loaded %s: %d tensors, %d new (attention) tensors", entry, len(state), len(missing))
    return missing
