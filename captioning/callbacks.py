"""Trainer callbacks: writing ``predict`` outputs; the ``last.ckpt`` a run resumes from."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.callbacks import BasePredictionWriter, ModelCheckpoint


class PredictionsWriter(BasePredictionWriter):
    """Writes ``captioning predict`` captions as a COCO results file (one ``{"image_id", "caption"}`` per image).

    Args:
        output: the JSON file; by default ``predictions.json`` in the run's log folder.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: list, batch_indices: list
    ) -> None:
        rows = [row for batch in predictions for row in batch]  # predictions: one list of rows per batch
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shards: list = [None] * dist.get_world_size()
            dist.all_gather_object(shards, rows)
            rows = [row for shard in shards for row in shard]
        if not trainer.is_global_zero:
            return
        unique = {row["image_id"]: row for row in rows}  # DistributedSampler repeats images to even out shards
        path = Path(self.output or Path(trainer.log_dir or trainer.default_root_dir) / "predictions.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([unique[i] for i in sorted(unique)], indent=1) + "\n")


class LastCheckpoint(ModelCheckpoint):
    """Keeps ``last.ckpt``: the whole training state (weights, optimizer, schedulers, loop progress, the training
    loader's position and the RNG states) to resume from with ``--ckpt_path .../last.ckpt``, at every epoch end and,
    with ``every_n_train_steps``, within epochs too.

    Lightning writes checkpoints atomically (to memory, then one write inside an fsspec transaction), so a run killed
    while saving leaves the previous ``last.ckpt`` intact. The best checkpoint (``best.ckpt``, on val CIDEr-D) is
    the separate ``--checkpoint.*`` callback.

    Args:
        dirpath: the folder (linked from ``--checkpoint.dirpath``).
        every_n_train_steps: also save every this many optimizer steps (0: only at epoch ends).
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 0) -> None:
        super().__init__(
            dirpath=dirpath,
            monitor=None,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps or None,
            save_on_train_epoch_end=True,
        )
