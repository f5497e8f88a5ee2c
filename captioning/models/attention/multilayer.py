"""Multi-layer SCA-CNN attention with per-step recomputation (Chen et al., CVPR 2017, arXiv 1611.05594, sec. 3).

For attended levels l_1 < ... < l_n of the encoder's last block (see :mod:`captioning.models.encoder`), at every
word t, with h_{t-1} the decoder's previous hidden state:

    V^{l_1}     = the cached, un-attended map of the lowest attended level        (R, C_1, h, w)
    X^{l_i}     = SCA(V^{l_i}, h_{t-1})  = alpha * beta * V, rescaled              (paper sec. 3, eq. 1-2)
    V^{l_i + 1} = CNN_{l_i + 1}(X^{l_i})                                           (the block's own layers, ``lift``)
    context     = sqrt(C) * L2-normalize(mean_hw X^{top})                          (official code; (R, C))

Maps above the top attended level (only when ``layer4`` itself is not attended) are lifted without attention.
Nothing is written back into the memory: every step starts again from the cached un-attended map, so attention
never compounds across words. All rows (images x beams) go through ``lift`` as one batch.
The initial LSTM state uses the L2-normalized mean of the un-attended ``layer4`` output, as the official code.

Both L2-normalized vectors are multiplied by sqrt(C), so that their entries have unit root mean square, like the
word embeddings they are concatenated with. The factor is a constant that the next linear layers absorb (the same
model class as the official code), but it sets how fast Adam can move that path: without it, a unit-norm 2048-d
context enters the LSTM gates about sqrt(C) times weaker than the words at initialization, and on the shapes demo
SCA reached val CIDEr-D 1.29 where the scaled version reaches 1.73 (same model, data and 8-epoch budget).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from captioning.models.attention.sca import SCAttention
from captioning.models.attention.weights import AttentionWeights
from captioning.models.encoder import Encoder


class MultiLayerSCA(nn.Module):
    """SCA-CNN attention over several maps of the encoder's last block, recomputed at every word.

    Args:
        encoder: the CNN; only its sizes and layer names are read here (its layers run through ``lift`` calls).
        hidden_dim: decoder LSTM size D.
        attn_dim: attention size k (512 in the official code).
        order: ``cs`` (channel then spatial; the paper's best), ``sc``, ``c`` or ``s``.
        layers: torchvision names of the attended maps (``encoder.level_names()``); empty: the paper's two,
            the last block's inner conv and ``layer4`` (``layer4.2.conv2`` and ``layer4`` for ResNet-50+; the
            paper's third layer below them is ``layer4.2.conv1``, res5c_branch2a).
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        hidden_dim: int,
        attn_dim: int,
        order: str = "cs",
        layers: Sequence[str] = (),
    ) -> None:
        super().__init__()
        names = encoder.level_names()
        layers = tuple(layers) or names[1:]
        unknown = [name for name in layers if name not in names]
        if unknown or not layers or len(set(layers)) != len(layers):
            raise ValueError(f"SCA layers must be distinct names among {names}, got {list(layers)}")
        self.levels = sorted(names.index(name) for name in layers)
        self.names = [names[level] for level in self.levels]
        channels = encoder.level_channels()
        self.layers = nn.ModuleList(
            SCAttention(channels[level], hidden_dim, attn_dim=attn_dim, order=order) for level in self.levels
        )

    def prepare(self, encoder: Encoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) -> memory: the block input, the lowest attended map, and ``pooled`` (B, C)."""
        return self.from_features(encoder, self.features(encoder, images))

    def features(self, encoder: Encoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) -> what lies below the recomputed layers: ``block_input`` (B, C_in, h, w), the last
        block's input (left out where no shortcut reads it: VGG), and ``low`` (B, C_l, h, w), the un-attended
        lowest attended map (left out where it is the block input itself)."""
        block_input = encoder.encode_below(images)  # (B, C_in, h, w)
        if self.levels[0] == 0 and encoder.level0_is_block_input:
            return {"block_input": block_input}
        low = encoder.enter(block_input, batch_stats=True)  # (B, C_0, h, w)
        for level in range(self.levels[0]):
            low = encoder.lift(low, level, block_input=block_input, batch_stats=True)  # (B, C_l, h, w)
        return {"block_input": block_input, "low": low} if encoder.has_shortcut else {"low": low}

    def from_features(self, encoder: Encoder, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`features` -> memory: the block input, the lowest attended map, and ``pooled`` (B, C), the
        un-attended ``layer4`` pushed up from the lowest attended map (as :meth:`Encoder.encode_block` does)."""
        block_input = features.get("block_input", features.get("low"))  # VGG: unused by its lift
        low = features.get("low", block_input)
        top = low
        for level in range(self.levels[0], 2):
            top = encoder.lift(top, level, block_input=block_input, batch_stats=True)  # -> (B, C, h, w) at level 2
        return {
            "block_input": block_input,  # (B, C_in, h, w): the shortcut, unless it is an attended level 0
            "low": low,  # (B, C_l, h, w)
            "pooled": _unit_rms(top.mean(dim=(2, 3))),  # (B, C)
        }

    def forward(
        self, memory: dict[str, torch.Tensor], hidden: torch.Tensor, encoder: Encoder
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """memory, h_{t-1} (R, D) -> context (R, C) and {``alpha.<layer>``: (R, N), ``beta.<layer>``: (R, C_l)}."""
        x, block_input, level = memory["low"], memory["block_input"], self.levels[0]
        weights = AttentionWeights()
        for target, name, attend in zip(self.levels, self.names, self.layers, strict=True):
            while level < target:  # V^{l+1} = CNN_{l+1}(X^l)
                x = encoder.lift(x, level, block_input=block_input)
                level += 1
            x, alphas, betas = attend(x, hidden)  # (R, C_l, h, w), (R, N) | None, (R, C_l) | None
            if level == 0 and encoder.level0_is_block_input:  # the block sees the attended input, shortcut too
                block_input = x
            if alphas is not None:
                weights.spatial[name] = alphas
            if betas is not None:
                weights.channel[name] = betas
        while level < 2:
            x = encoder.lift(x, level, block_input=block_input)
            level += 1
        return _unit_rms(x.mean(dim=(2, 3))), weights.flat()  # (R, C)


def _unit_rms(x: torch.Tensor) -> torch.Tensor:
    """sqrt(C) * x / ||x||_2 over the channels: (R, C) -> (R, C), each row of unit root mean square."""
    return F.normalize(x, dim=1) * x.shape[1] ** 0.5
