"""Inference: captions (and attention) of image files, and the attention figures of ``captioning visualize``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from captioning.data.images import load_image, normalize_image, resize_image
from captioning.errors import CaptioningError
from captioning.models.modes import inference
from captioning.module import CaptioningModule
from captioning.viz.figures import Captioned, draw, split_generation
from captioning.viz.gates import BlockGates, backbone_gates, plot_gates


def caption_images(
    module: CaptioningModule, paths: Sequence[str | Path], *, beam_size: int | None = None, batch_size: int = 32
) -> list[Captioned]:
    """Captions image files, ``batch_size`` at a time; per image its caption, words, attention and resized pixels.

    The model runs in eval and inference mode whatever mode it was left in (:func:`~captioning.models.modes.inference`)
    and gets its train/eval flags back afterwards.
    """
    side = module.hparams.image_size
    out = []
    with inference(module):
        for first in range(0, len(paths), batch_size):
            pictures = [load_image(p) for p in paths[first : first + batch_size]]  # a one-line error names a bad file
            pixels = torch.stack([resize_image(p, side) for p in pictures])  # (B, 3, S, S) uint8
            images = normalize_image(pixels).to(module.device)  # (B, 3, S, S) float
            captions, generation = module.generate(images, beam_size=beam_size)
            out += split_generation(captions, generation, pixels.permute(0, 2, 3, 1).numpy())
    return out


def figure_stems(paths: Sequence[str | Path]) -> list[str]:
    """File-name stems for the figures of ``paths``: the image's stem, numbered where two images share one
    (``a/cat.png`` and ``b/cat.jpg`` -> ``cat_1``, ``cat_2``), so no figure overwrites another."""
    stems = [Path(p).stem for p in paths]
    counts = Counter(stems)
    seen: dict[str, int] = {}
    out = []
    for stem in stems:
        if counts[stem] > 1:
            seen[stem] = seen.get(stem, 0) + 1
            stem = f"{stem}_{seen[stem]}"
        out.append(stem)
    return out


def _gates(
    module: CaptioningModule, items: Sequence[Captioned], blocks: list[str], source: str, batch_size: int = 32
) -> dict[str, BlockGates]:
    """The backbone gates of ``blocks`` (``all``: every gated block) for the images the model saw, ``batch_size``
    images per encoder pass."""
    parts = []
    for first in range(0, len(items), batch_size):
        pixels = np.stack([item.pixels for item in items[first : first + batch_size]])  # (B, S, S, 3)
        images = normalize_image(torch.from_numpy(pixels).permute(0, 3, 1, 2))  # (B, 3, S, S) float
        try:
            parts.append(backbone_gates(module.captioner.encoder, images.to(module.device), blocks))
        except ValueError as e:
            raise CaptioningError(f"{source}: {e}") from e
    return {
        name: BlockGates(
            torch.cat([part[name].channel for part in parts]),
            None if parts[0][name].spatial is None else torch.cat([part[name].spatial for part in parts]),
        )
        for name in parts[0]
    }


def visualize_images(
    module: CaptioningModule,
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    beam_size: int | None = None,
    top_k: int = 5,
    gates: Sequence[str] | None = None,
    source: str = "the model",
) -> list[tuple[Captioned, list[Path]]]:
    """Per image, each generated word over its spatial attention map (one row per attended layer) and, for channel
    attention, the weights over words x channels (``top_k`` channels listed per word); with ``gates`` (block names
    or ``["all"]``) also the backbone's CBAM/SE gates. Writes ``OUT/<stem>*.png``; returns each image's captioned
    item and its figure files. ``source`` names the model in errors (e.g. the checkpoint path)."""
    out = Path(out)
    items = caption_images(module, paths, beam_size=beam_size)
    if not gates and not any(item.spatial or item.channel for item in items):
        raise CaptioningError(f"{source}: the model has no decoder attention to draw (attention none)")
    gated = _gates(module, items, list(gates), source) if gates else None
    drawn = []
    for row, (stem, item) in enumerate(zip(figure_stems(paths), items, strict=True)):
        files = draw(item, out / stem, top_k=top_k)
        if gated is not None:
            files.append(plot_gates(item.pixels, gated, row, f"{out / stem}_gates.png"))
        drawn.append((item, files))
    return drawn
