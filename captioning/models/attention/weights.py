"""The attention weights of one decoder step, by attended layer: the contract between a decoder attention and the
code that reads its weights (the loss, decoding, visualization and grounding).

Two kinds, in the papers' notation:

- spatial, alpha: (B, N) over the N = h*w locations of a layer's map, summing to 1 (Show-Attend-Tell eq. 5;
  SCA-CNN eq. 6);
- channel, beta: (B, C_l) over a layer's channels (SCA-CNN eq. 8).

An attention returns them as :class:`AttentionWeights`, made flat (:meth:`AttentionWeights.flat`) for the decoder:
one tensor per name (``alpha`` for the single map of soft attention, ``alpha.<layer>`` and ``beta.<layer>`` for
SCA-CNN's attended layers), so that teacher forcing stacks them over words and beam search repeats, indexes and
backtracks them as plain tensors without knowing their parts. :meth:`AttentionWeights.of` reads such a dict back,
with any leading shape: (B, T, N) over a caption, (T, N) for one image. These names are parsed here and nowhere
else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

FINAL_MAP = "final"  # the layer name of an attention over the encoder's final map as a whole (soft attention)
_KINDS = {"alpha": "spatial", "beta": "channel"}


@dataclass(frozen=True)
class AttentionWeights:
    """Attended layer -> spatial weights (..., N) and channel weights (..., C_l), in the attention's bottom-up order."""

    spatial: dict[str, torch.Tensor] = field(default_factory=dict)
    channel: dict[str, torch.Tensor] = field(default_factory=dict)

    def flat(self) -> dict[str, torch.Tensor]:
        """-> {``alpha`` | ``alpha.<layer>``: spatial, ``beta.<layer>``: channel}: what the decoder carries."""
        out = {}
        for symbol, kind in _KINDS.items():
            for layer, weights in getattr(self, kind).items():
                out[symbol if layer == FINAL_MAP else f"{symbol}.{layer}"] = weights
        return out

    @classmethod
    def of(cls, flat: Mapping[str, torch.Tensor]) -> AttentionWeights:
        """The inverse of :meth:`flat`, for tensors of any leading shape."""
        parts: dict[str, dict[str, torch.Tensor]] = {"spatial": {}, "channel": {}}
        for name, weights in flat.items():
            symbol, _, layer = name.partition(".")
            if symbol not in _KINDS:
                raise ValueError(f"attention weights {name!r}: not alpha[.<layer>] or beta.<layer>")
            parts[_KINDS[symbol]][layer or FINAL_MAP] = weights
        return cls(**parts)
