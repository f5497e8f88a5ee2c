"""The backbone's own attention: CBAM's spatial and channel gates (and SE's channel gate) of chosen residual blocks.

CBAM (Woo et al. 2018, arXiv 1807.06521, eq. 1-3): F' = M_c(F) * F, F'' = M_s(F') * F' with M_c (C,) and
M_s (H, W) in (0, 1). These gates do not depend on the caption: they are read once per image, from the un-attended
forward pass of the encoder (with SCA, the last block's gates also change per word, as its input is re-attended).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from captioning.models.cbam import CBAM, SE
from captioning.models.encoder import Encoder
from captioning.models.modes import inference
from captioning.viz import save_figure


@dataclass
class BlockGates:
    """The gates of one residual block for a batch of images."""

    channel: torch.Tensor  # (B, C) M_c (CBAM) or the SE gate
    spatial: torch.Tensor | None  # (B, h, w) M_s; None for SE


def gated_blocks(backbone: nn.Module) -> dict[str, CBAM | SE]:
    """Block name (torchvision's, e.g. ``layer1.0``) -> its attention module, for every block with CBAM or SE."""
    return {
        name: module.attention
        for name, module in backbone.named_modules()
        if isinstance(getattr(module, "attention", None), CBAM | SE)
    }


def backbone_gates(
    encoder: Encoder, images: torch.Tensor, blocks: Sequence[str] | None = None
) -> dict[str, BlockGates]:
    """Runs the encoder on images (B, 3, H, W) and returns {block name: :class:`BlockGates`} for ``blocks``
    (default, or ``["all"]``: every gated block), in network order. Forward hooks read each gate from its module's
    own input. The encoder runs in eval and inference mode and gets its train/eval flags back afterwards."""
    available = gated_blocks(encoder.backbone)
    if not available:
        raise ValueError("the backbone has no CBAM or SE blocks (encoder attention none)")
    chosen = list(available) if blocks is None or list(blocks) == ["all"] else list(blocks)
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ValueError(f"no CBAM/SE block named {unknown}; the gated blocks are {list(available)}")
    gates: dict[str, dict[str, torch.Tensor]] = {name: {} for name in chosen}
    handles = []
    for name in chosen:
        module = available[name]
        if isinstance(module, SE):
            handles.append(module.register_forward_hook(_recorder(gates[name], "channel")))
        else:
            handles.append(module.channel.register_forward_hook(_recorder(gates[name], "channel")))
            handles.append(module.spatial.register_forward_hook(_recorder(gates[name], "spatial")))
    try:
        with inference(encoder):  # whatever mode it was left in: train-mode BN would move its running statistics
            encoder(images)
    finally:
        for handle in handles:
            handle.remove()
    return {
        name: BlockGates(got["channel"], got["spatial"][:, 0] if "spatial" in got else None)
        for name, got in gates.items()
    }


def _recorder(store: dict, key: str) -> Callable[[nn.Module, tuple[torch.Tensor], torch.Tensor], None]:
    def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        store[key] = module.gate(inputs[0]).detach()  # (B, C) or (B, 1, h, w)

    return hook


def plot_gates(image: np.ndarray, gates: dict[str, BlockGates], row: int, path: str | Path) -> Path:
    """Writes a PNG for image ``row`` of the batch: per block a column, its spatial gate over the image (bilinearly
    upsampled, colors stretched to the gate's range) above its channel gate (C values, in channel order)."""
    fig = Figure(figsize=(2.2 * len(gates), 3.6), dpi=80)
    axes = fig.subplots(2, len(gates), squeeze=False)
    for (top, bottom), (name, gate) in zip(axes.T, gates.items(), strict=True):
        top.imshow(image)
        if gate.spatial is not None:
            spatial = gate.spatial[row].float()[None, None]  # (1, 1, h, w)
            heat = F.interpolate(spatial, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
            low, high = float(gate.spatial[row].min()), float(gate.spatial[row].max())
            # stretched to this gate's own range (in the title): trained gates often span a few hundredths only
            top.imshow(heat.cpu().numpy(), cmap="jet", alpha=0.5, vmin=low, vmax=max(high, low + 1e-6))
            top.set_title(f"{name}\nM_s {low:.2f}-{high:.2f}", fontsize=8)
        else:
            top.set_title(f"{name}\n(SE: no spatial gate)", fontsize=8)
        top.axis("off")
        channel = gate.channel[row].float().cpu().numpy()  # (C,)
        bottom.bar(np.arange(channel.size), channel, width=1.0)
        bottom.set_ylim(0.0, 1.0)
        bottom.set_title(f"M_c over {channel.size} channels", fontsize=8)
        bottom.tick_params(labelsize=6)
    return save_figure(fig, path)
