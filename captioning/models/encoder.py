"""CNN encoders (a CBAM/SE ResNet up to ``layer4``, a VGG up to its last conv), and the split that multi-layer
SCA-CNN attention needs.

SCA-CNN (Chen et al., CVPR 2017, arXiv 1611.05594, section 3.1) attends several
maps of the CNN and feeds each attended map to the layers above it: V^{l+1} = CNN_{l+1}(X^l). Everything above the
lowest attended map therefore runs again at every word; everything below it runs once per image. Every encoder
exposes three attendable levels; level 2 is always the final map that ``forward`` returns.

ResNet: as in the official code (ResNet-152: ``res5c_branch2b`` then ``res5c``), the maps of the last residual block.
Bottleneck blocks (ResNet-50+), the official code's options (its lowest attended layer is ``res5c_branch2a`` or
``res5c_branch2b``; the paper's 3-layer ablation adds ``res5c_branch2a`` below the two):

    level 0  its first conv's output (after BN and ReLU)   res5c_branch2a  layer4.2.conv1 (512 x 7 x 7)
    level 1  its second conv's output (after BN and ReLU)  res5c_branch2b  layer4.2.conv2 (512 x 7 x 7)
    level 2  its output = ``layer4``                        res5c           layer4         (2048 x 7 x 7)

Basic blocks (ResNet-18/34) have one inner conv, so their level 0 is the block's input:

    level 0  its input (the output of the block before it)                  layer4.0       (512 x 3 x 3 at 96 px)
    level 1  its first conv's output (after BN and ReLU)                    layer4.1.conv1 (512 x 3 x 3)
    level 2  its output = ``layer4``                                        layer4

The block's input is the identity shortcut of level 2: un-attended for bottleneck blocks, attended when it is an
attended level 0 of a basic block.

VGG: the outputs (after ReLU) of the last three convs, before the last max-pool (stride 16: 14 x 14 at 224 px).
torchvision indexes VGG layers only by number, so the levels carry the paper's (Caffe) names:

    VGG-19   conv5_2, conv5_3, conv5_4   (without BN: features.30/31, 32/33, 34/35, conv/ReLU; 512 x 14 x 14)
    VGG-16   conv5_1, conv5_2, conv5_3   (features.24/25, 26/27, 28/29)

The official code attends conv5_3 and conv5_4 of VGG-19 (the default, ``level_names()[1:]``); VGG-16 has no
conv5_4, so its default pair is the analogous conv5_2, conv5_3. A third attended layer is conv5_2 (VGG-19) or
conv5_1 (VGG-16). VGG has no shortcut, so ``lift`` ignores ``block_input`` (for VGG, the level-0 map).

``lift`` pushes a (possibly attended) map one level up, batched over every row it is given (images x beams).
In the per-word lifts BN always uses its running statistics (the block's own BNs and the BN of its CBAM spatial
gate), so a recomputation never normalizes with the statistics of attended maps, never updates the running
statistics, and each row stays independent of the others, in training too (the official code's Caffe ResNet has
fixed BN scale layers too). The once-per-image un-attended pass (``encode_levels``) runs BN as the module does:
batch statistics while training, which also keeps the running statistics current. Without that, a backbone trained
from scratch would never update the running statistics of the layers above the lowest attended map, and every lift
would normalize with their initial values (mean 0, variance 1). In eval mode both paths are the same computation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

from captioning.errors import ConfigError
from captioning.models.backbones import VGG, AttentiveResNet, load_imagenet_weights


class Encoder(nn.Module):
    """What every CNN encoder offers the decoder attentions.

    ``forward`` and ``out_channels`` serve ``none`` and ``soft`` attention; the level API (``level_names``,
    ``level_channels``, ``encode_levels``, ``lift``) serves multi-layer SCA. ``backbone`` is the torchvision-layout
    network without its classifier, so checkpoint keys read ``encoder.backbone.<torchvision name>``.

    Args:
        backbone: the CNN.
        out_channels: channels C of the final map.
        trainable: whether the backbone is fine-tuned (False freezes it, BN statistics included).
        load_weights: fetch ``weights`` (False: for a state dict that replaces every tensor).
        train_attention: whether the attention modules inside the backbone (CBAM, SE; named ``*.attention``) keep
            training where the rest is frozen (``trainable`` false, or a stage frozen by :meth:`set_frozen`): grafted
            onto pretrained weights they are the new, untrained part. Their BN statistics stay fixed there.
        train_modules: with ``trainable`` false, backbone modules (torchvision names, e.g. ``layer4.2.conv3`` or
            ``layer4``) whose weights still train, BN statistics fixed: the official SCA-CNN recipe trains only the
            1x1 conv after the lowest attended map (``res5c_branch2c``) of a frozen ResNet-152.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        out_channels: int,
        trainable: bool,
        train_attention: bool = True,
        train_modules: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_channels = out_channels
        self.trainable = trainable
        self.train_attention = train_attention
        self.frozen: set[str] = set()  # backbone children frozen for now (see set_frozen)
        self.backbone.requires_grad_(trainable)
        self._keep_attention_trainable()
        if train_modules and trainable:
            raise ConfigError("encoder train_modules picks what trains in a frozen backbone: set trainable false too")
        for name in train_modules:
            try:
                backbone.get_submodule(name).requires_grad_(True)
            except AttributeError:
                stages = [n for n, _ in backbone.named_children()]
                raise ConfigError(
                    f"encoder train_modules: the backbone has no module {name!r} ({stages} ...)"
                ) from None

    def _keep_attention_trainable(self) -> None:
        if self.train_attention:
            for name, module in self.backbone.named_modules():
                if name.endswith(".attention"):
                    module.requires_grad_(True)

    def set_frozen(self, stages: set[str] | None) -> None:
        """Freezes the named backbone children (``None``: all of them) and unfreezes the others, for a fine-tuning
        schedule. Frozen parts get no gradient and keep their BN running statistics. No effect when the encoder
        was built with ``trainable=False`` (frozen for good)."""
        names = {name for name, _ in self.backbone.named_children()}
        unknown = (stages or set()) - names
        if unknown:
            raise ValueError(f"unknown encoder stages {sorted(unknown)}; the backbone has {sorted(names)}")
        self.frozen = names if stages is None else set(stages)
        if self.trainable:
            for name, child in self.backbone.named_children():
                child.requires_grad_(name not in self.frozen)
            self._keep_attention_trainable()
        self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        if not self.trainable:  # a frozen backbone keeps its BN running statistics
            self.backbone.eval()
        for name, child in self.backbone.named_children():
            if name in self.frozen:
                child.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> the final map (B, C, h, w)."""
        raise NotImplementedError

    def level_names(self) -> tuple[str, str, str]:
        """Names of the maps at levels 0, 1, 2 (the names ``DecoderSpec.sca_layers`` lists)."""
        raise NotImplementedError

    def level_channels(self) -> tuple[int, int, int]:
        """Channels of the maps at levels 0, 1, 2."""
        raise NotImplementedError

    #: whether level 0 is the last block's input (so attending it changes the block's shortcut too)
    level0_is_block_input: bool = True
    #: whether ``lift`` adds the block input at level 2 (a residual shortcut); VGG has none
    has_shortcut: bool = False

    def encode_below(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> the last block's input (B, C_in, h, w): everything below the attendable levels
        (for VGG and basic blocks, the level-0 map itself)."""
        raise NotImplementedError

    def enter(self, block_input: torch.Tensor, *, batch_stats: bool = False) -> torch.Tensor:
        """The last block's input (B, C_in, h, w) -> the level-0 map (B, C_0, h, w) (the identity where level 0 is
        the block input)."""
        return block_input

    def encode_block(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """images (B, 3, H, W) -> the block input and the un-attended maps at levels 0, 1, 2, each (B, C_l, h, w).
        Runs once per image.

        The levels come from :meth:`enter` and :meth:`lift` themselves (with BN as the module runs it, see the
        module docstring), so the un-attended pass and the per-word recomputation are one code path.
        """
        block_input = self.encode_below(images)  # (B, C_in, h, w)
        return block_input, self.levels_from(block_input)

    def levels_from(self, block_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The last block's input (B, C_in, h, w) -> the un-attended maps at levels 0, 1, 2."""
        low = self.enter(block_input, batch_stats=True)  # (B, C_0, h, w)
        middle = self.lift(low, 0, block_input=block_input, batch_stats=True)  # (B, C_1, h, w)
        return low, middle, self.lift(middle, 1, block_input=block_input, batch_stats=True)  # ..., (B, C_2, h, w)

    def encode_levels(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) -> the un-attended maps at levels 0, 1, 2 (see :meth:`encode_block`)."""
        return self.encode_block(images)[1]

    def lift(
        self, x: torch.Tensor, level: int, *, block_input: torch.Tensor, batch_stats: bool = False
    ) -> torch.Tensor:
        """Pushes a map (R, C_level, h, w) from ``level`` (0 or 1) one level up, for R rows (images x beams).

        ``block_input`` is the last block's input as this step sees it (attended when it is an attended level 0);
        encoders with a shortcut around the block (ResNet) add it at level 2, the others ignore it.
        ``batch_stats``: BN as the module runs it, for the once-per-image pass only.
        """
        raise NotImplementedError


class ResNetEncoder(Encoder):
    """ResNet-``depth`` feature extractor (classifier head dropped).

    Args:
        depth: 18, 34, 50, 101 or 152.
        attention: backbone attention in every residual block, by name
            (:data:`~captioning.models.cbam.BACKBONE_ATTENTIONS`: ``none``, ``se``, ``cbam``, or one registered there).
        weights: torchvision ImageNet weights name (``IMAGENET1K_V1``, ``IMAGENET1K_V2``) or None for random init.
        width: base width (64 = standard; smaller for fast CPU models, random init only).
        trainable: whether the backbone is fine-tuned (False freezes it, BN statistics included).
        train_modules: see :class:`Encoder`.
        train_attention: see :class:`Encoder`; None: when the gates are new, grafted onto ``weights``.
        output_stride: 32 (torchvision's) or 16: ``layer4`` keeps ``layer3``'s resolution (twice the grid side,
            e.g. 6 x 6 instead of 3 x 3 at 96 px), its later 3x3 convs dilated by 2 so their receptive field stays
            that of the pretrained network (Chen et al. 2017, DeepLab; torchvision's ``replace_stride_with_dilation``,
            applied here to basic blocks too). About 4x the FLOPs of ``layer4``.
        load_weights: fetch ``weights`` (False: the model they shape, grafted gates included, without them, for a
            state dict that replaces every tensor: a checkpoint or an export being loaded).
    """

    backbone: AttentiveResNet
    has_shortcut = True

    def __init__(
        self,
        depth: int,
        *,
        attention: str = "none",
        weights: str | None = None,
        width: int = 64,
        trainable: bool = True,
        output_stride: Literal[32, 16] = 32,
        train_attention: bool | None = None,
        train_modules: tuple[str, ...] = (),
        load_weights: bool = True,
    ) -> None:
        # with pretrained weights, the gates start at exactly 1 (the network is the pretrained one at step 0)
        backbone = AttentiveResNet(depth, attention=attention, width=width, graft=weights is not None)
        if weights and load_weights:
            load_imagenet_weights(backbone, depth, weights)
        if output_stride == 16:
            _dilate_last_stage(backbone.layer4)
        elif output_stride != 32:
            raise ValueError(f"output_stride must be 32 or 16, got {output_stride}")
        del backbone.fc  # the encoder stops at layer4 (the classifier is never used)
        if train_attention is None:
            train_attention = weights is not None
        super().__init__(
            backbone,
            out_channels=backbone.out_channels,
            trainable=trainable,
            train_attention=train_attention,
            train_modules=train_modules,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> layer4 features (B, C, H/s, W/s), s the output stride (32 or 16)."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))  # (B, w, H/4, W/4)
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))  # (B, C, H/32, W/32)

    # -- SCA-CNN: the last block, split into attendable levels (see the module docstring) ------------------------
    @property
    def level0_is_block_input(self) -> bool:  # type: ignore[override]
        return not isinstance(self.backbone.layer4[-1], Bottleneck)

    def level_names(self) -> tuple[str, str, str]:
        """torchvision names of the maps at levels 0, 1, 2."""
        last = len(self.backbone.layer4) - 1
        if isinstance(self.backbone.layer4[last], Bottleneck):
            return f"layer4.{last}.conv1", f"layer4.{last}.conv2", "layer4"
        return f"layer4.{last - 1}", f"layer4.{last}.conv1", "layer4"

    def level_channels(self) -> tuple[int, int, int]:
        block = self.backbone.layer4[-1]
        if isinstance(block, Bottleneck):
            return block.bn1.num_features, block.bn2.num_features, self.out_channels
        return self.out_channels, block.bn1.num_features, self.out_channels

    def encode_below(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> the last block's input (B, C, H/32, W/32)."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))  # (B, w, H/4, W/4)
        return b.layer4[:-1](b.layer3(b.layer2(b.layer1(x))))  # (B, C, h, w)

    def enter(self, block_input: torch.Tensor, *, batch_stats: bool = False) -> torch.Tensor:
        """Bottleneck: the block input (B, C, h, w) -> its first conv's output (B, planes, h, w); basic: identity."""
        block = self.backbone.layer4[-1]
        if not isinstance(block, Bottleneck):
            return block_input
        return block.relu(_bn(block.bn1, block.conv1(block_input), batch_stats))  # (B, planes, h, w)

    def lift(
        self, x: torch.Tensor, level: int, *, block_input: torch.Tensor, batch_stats: bool = False
    ) -> torch.Tensor:
        """Pushes a map from ``level`` (0 or 1) to the next level through the last block's own layers.

        Args:
            x: the map at ``level`` (attended or not), (R, C_level, h, w) for R rows (images x beams).
            level: 0 (-> the inner conv output: conv2 of a bottleneck, conv1 of a basic block) or 1 (-> the block
                output).
            block_input: the block's input as this step sees it (for a basic block the attended level-0 map when
                level 0 is attended, else the cached one): the identity shortcut adds it.
            batch_stats: BN as the module runs it (batch statistics while training, updating the running ones):
                for the once-per-image un-attended pass only (see the module docstring).
        """
        block = self.backbone.layer4[-1]
        if level == 0:
            if isinstance(block, Bottleneck):
                return block.relu(_bn(block.bn2, block.conv2(x), batch_stats))  # (R, planes, h, w)
            return block.relu(_bn(block.bn1, block.conv1(x), batch_stats))  # (R, planes, h, w)
        if level == 1:
            conv, bn = (block.conv3, block.bn3) if isinstance(block, Bottleneck) else (block.conv2, block.bn2)
            shortcut = block_input if block.downsample is None else block.downsample(block_input)
            out = _bn(bn, conv(x), batch_stats)  # (R, C, h, w)
            with nullcontext() if batch_stats else _running_statistics(block.attention):  # CBAM's spatial-gate BN
                out = block.attention(out)  # (R, C, h, w)
            return block.relu(out + shortcut)  # (R, C, h, w)
        raise ValueError(f"level must be 0 or 1, got {level}")


def _dilate_last_stage(stage: nn.Sequential) -> None:
    """Output stride 32 -> 16: the stage's stride becomes 1 and its later 3x3 convs are dilated by 2 (torchvision's
    ``_make_layer`` with ``dilate=True``: the first block keeps dilation 1, every block after it uses 2)."""
    first = stage[0]
    for conv in (m for m in first.modules() if isinstance(m, nn.Conv2d)):
        conv.stride = (1, 1)  # the strided 3x3 conv and the 1x1 downsample
    for block in list(stage)[1:]:
        for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)):
            conv.dilation, conv.padding = (2, 2), (2, 2)  # (CBAM's 7x7 spatial gate keeps its own)


class VGGEncoder(Encoder):
    """VGG-``depth`` feature extractor up to its last conv's ReLU (the last max-pool and the classifier dropped).

    Args:
        depth: 16 or 19.
        batch_norm: torchvision's ``vgg16_bn`` / ``vgg19_bn`` layout (BN after every conv).
        weights: torchvision ImageNet weights name (``IMAGENET1K_V1``) or None for random init.
        width: base width (64 = standard; smaller for fast CPU models, random init only).
        trainable: whether the backbone is fine-tuned (False freezes it, BN statistics included).
    """

    backbone: VGG

    def __init__(
        self,
        depth: int,
        *,
        batch_norm: bool = False,
        weights: str | None = None,
        width: int = 64,
        trainable: bool = True,
        train_modules: tuple[str, ...] = (),
        load_weights: bool = True,
    ) -> None:
        backbone = VGG(depth, batch_norm=batch_norm, width=width, num_classes=None)  # no classifier: never used
        if weights and load_weights:
            load_imagenet_weights(backbone, depth, weights)
        # Drop the last max-pool too (the slice keeps torchvision's indices, so state-dict keys are unchanged):
        # SCA-CNN attends the conv5 maps, 14 x 14 at 224 px.
        backbone.features = backbone.features[:-1]
        super().__init__(backbone, out_channels=backbone.out_channels, trainable=trainable, train_modules=train_modules)
        self.depth = depth
        convs = [i for i, layer in enumerate(backbone.features) if isinstance(layer, nn.Conv2d)]
        self.starts = convs[-3:]  # where levels 0, 1, 2 begin: each is conv (+ BN) + ReLU

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> last conv's features (B, C, H/16, W/16)."""
        return self.backbone.features(images)

    # -- SCA-CNN: the last three convs as attendable levels (see the module docstring) -----------------------------
    def level_names(self) -> tuple[str, str, str]:
        """The paper's names of the maps at levels 0, 1, 2 (conv5_2, conv5_3, conv5_4 for VGG-19)."""
        last = {16: 3, 19: 4}[self.depth]  # convs in stage 5 (arXiv 1409.1556, Table 1)
        return f"conv5_{last - 2}", f"conv5_{last - 1}", f"conv5_{last}"

    def level_channels(self) -> tuple[int, int, int]:
        return self.out_channels, self.out_channels, self.out_channels

    def encode_below(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> the level-0 conv's output (B, C, H/16, W/16)."""
        return self.backbone.features[: self.starts[1]](images)  # (B, C, h, w)

    def lift(
        self, x: torch.Tensor, level: int, *, block_input: torch.Tensor, batch_stats: bool = False
    ) -> torch.Tensor:
        """Pushes a map from ``level`` (0 or 1) through the next conv (+ BN) + ReLU.

        Args:
            x: the map at ``level`` (attended or not), (R, C, h, w) for R rows (images x beams).
            level: 0 or 1.
            block_input: unused: VGG has no shortcut (kept for the common signature).
            batch_stats: BN as the module runs it (see :meth:`ResNetEncoder.lift`).
        """
        if level not in (0, 1):
            raise ValueError(f"level must be 0 or 1, got {level}")
        stop = self.starts[2] if level == 0 else len(self.backbone.features)
        for layer in self.backbone.features[self.starts[level + 1] : stop]:
            x = _bn(layer, x, batch_stats) if isinstance(layer, nn.BatchNorm2d) else layer(x)  # (R, C, h, w)
        return x


@contextmanager
def _running_statistics(module: nn.Module) -> Iterator[None]:
    """Every BN inside ``module`` normalizes with its running statistics, and leaves them as they are, while the
    block runs (its train/eval flags are put back after): the per-word lifts of a backbone attention module."""
    training = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in training:
        m.train(False)
    try:
        yield
    finally:
        for m in training:
            m.train(True)


def _bn(bn: nn.BatchNorm2d, x: torch.Tensor, batch_stats: bool) -> torch.Tensor:
    """BatchNorm as the module runs it (``batch_stats``), or with its running statistics, in training too."""
    if batch_stats:
        return bn(x)
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
