"""Pre-extraction: the frozen part of a config's encoder, run once over the images of its splits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from captioning.config import build
from captioning.errors import CaptioningError
from captioning.extract import extract_features


def extract(
    fit_args: Sequence[str],
    out: str | Path,
    *,
    splits: Sequence[str] = ("train", "val", "test"),
    shard: int = 0,
    shards: int = 1,
    batch_size: int = 32,
    num_workers: int = 2,
    device: str = "auto",
) -> dict[str, int]:
    """Stores what the decoder of the model that ``captioning fit FIT_ARGS`` would train reads from its frozen CNN,
    for every image of ``splits``, in ``out`` (float16 memory maps + manifest; resumes an interrupted run; shard
    ``shard`` of ``shards`` when several processes share the work). ``device`` ``auto``: ``cuda:SHARD`` (modulo the
    GPUs) where there is a GPU, else the CPU. Returns the images written per split."""
    cli = build(fit_args)
    module, data = cli.model, cli.datamodule
    if data.feature_store is not None:
        raise CaptioningError("extract reads images: leave --data.features out of its config")
    if device == "auto":
        count = torch.cuda.device_count()
        device = f"cuda:{shard % count}" if count else "cpu"
    if module.hparams.init_weights:  # the weights a run from this config starts from
        module.load_init_weights()
    return extract_features(
        module,
        {split: data.records(split) for split in splits},
        Path(out),
        image_cache=data.image_cache,
        shard=shard,
        shards=shards,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
    )
