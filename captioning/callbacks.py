"""Trainer callbacks: the encoder's fine-tuning schedule; writing ``predict`` outputs; the ``last.ckpt`` a run resumes
from; sample captions with attention figures on the experiment dashboards."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from PIL import Image
from pytorch_lightning.callbacks import BaseFinetuning, BasePredictionWriter, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from captioning.data.images import denormalize_images
from captioning.errors import ConfigError
from captioning.viz.figures import draw, split_generation


class EncoderFinetuning(BaseFinetuning):
    """The CNN frozen (weights and BN running statistics) for the first ``frozen_epochs`` epochs, then the backbone
    stages ``unfreeze`` trained (all of them when empty); the CLI's ``--finetuning.*``. With ``frozen_epochs`` 0
    (the default) it does nothing.

    Lightning's fine-tuning callback calls the two hooks below at setup and at every epoch start, and keeps its state
    in checkpoints. Freezing itself is :meth:`Encoder.set_frozen` rather than ``BaseFinetuning.freeze``: the encoder
    knows its stages, which of its parts stay frozen for good (``trainable`` false, ``train_modules``) and that
    CBAM/SE grafted onto pretrained weights keep training. The CNN's parameters are in the optimizer from the start
    (their own group, ``optimization.encoder_lr``); frozen, they get no gradient and no update.

    Args:
        frozen_epochs: epochs for which the whole CNN is frozen.
        unfreeze: backbone stages trained after that (``layer4``, ...; empty: every stage).
    """

    def __init__(self, frozen_epochs: int = 0, unfreeze: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.frozen_epochs, self.unfreeze = frozen_epochs, tuple(unfreeze)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.frozen_epochs and stage == "fit":  # validate / test / predict train nothing
            if getattr(trainer.datamodule, "feature_store", None) is not None:
                # Frozen here, the CNN would pass the module's check that no trained layer lies below the stored
                # maps; the stages unfrozen later would then never run.
                raise ConfigError(
                    "finetuning.frozen_epochs trains CNN stages that pre-extracted features (--data.features) stand "
                    "for: train without --data.features, or keep the CNN frozen"
                )
            stages = {name for name, _ in pl_module.captioner.encoder.backbone.named_children()}
            if unknown := set(self.unfreeze) - stages:
                raise ConfigError(
                    f"finetuning.unfreeze: unknown stages {sorted(unknown)}; the encoder has {sorted(stages)}"
                )
            if trainer.world_size > 1 and not getattr(trainer.strategy, "_ddp_kwargs", {}).get(
                "find_unused_parameters"
            ):
                raise ConfigError(
                    "finetuning.frozen_epochs under DDP needs --trainer.strategy ddp_find_unused_parameters_true "
                    "(frozen layers produce no gradient for DDP to wait for)"
                )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        if self.frozen_epochs:
            pl_module.captioner.encoder.set_frozen(None)  # the whole CNN

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if not self.frozen_epochs:
            return
        encoder = pl_module.captioner.encoder
        if epoch < self.frozen_epochs:
            encoder.set_frozen(None)  # also where a run resumes inside the frozen epochs
        else:
            stages = {name for name, _ in encoder.backbone.named_children()}
            encoder.set_frozen(stages - set(self.unfreeze) if self.unfreeze else set())


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


class ValidationSamples(pl.Callback):
    """After each validation, logs the first ``num_images`` val images with their generated and reference captions
    (a wandb table; TensorBoard text) and the figures of ``captioning visualize`` for each: every word over its
    spatial map of every attended layer and, for SCA-CNN's channel attention, beta over words x channels. They go
    to the run's wandb and TensorBoard loggers; other loggers get nothing.

    Args:
        num_images: images to show (0 turns the callback off).
    """

    def __init__(self, num_images: int = 4) -> None:
        self.num_images = num_images
        self._batch = None

    def _loggers(self, trainer: pl.Trainer) -> list:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger | TensorBoardLogger)]

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and self.num_images and trainer.is_global_zero and self._loggers(trainer):
            self._batch = batch

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batch, self._batch = self._batch, None
        if batch is None or trainer.sanity_checking or not batch.image_ids:
            return
        if isinstance(batch.images, dict):  # pre-extracted features (--data.features): no pixels to draw on
            return
        images = batch.images[: self.num_images]
        with torch.no_grad():
            captions, generation = pl_module.generate(images)
        items = split_generation(captions, generation, denormalize_images(images))
        references = batch.references[: len(items)]
        rows = [(item.pixels, item.caption, " | ".join(refs)) for item, refs in zip(items, references, strict=True)]
        with tempfile.TemporaryDirectory() as tmp:
            figures: dict[str, list[Path]] = {}  # val/attention, val/channels -> one PNG per image
            for i, item in enumerate(items):
                for path in draw(item, Path(tmp) / str(i)):  # <i>_attention.png, <i>_channels.png
                    figures.setdefault(f"val/{path.stem.partition('_')[2]}", []).append(path)
            for logger in self._loggers(trainer):
                self._log(logger, rows, figures, trainer.global_step)

    @staticmethod
    def _log(logger, rows: list, figures: dict[str, list[Path]], step: int) -> None:
        if isinstance(logger, WandbLogger):
            import wandb  # only where wandb logs: importing it takes about a second

            table = [[wandb.Image(pixels), caption, references] for pixels, caption, references in rows]
            logger.log_table("val/samples", columns=["image", "generated", "references"], data=table, step=step)
            for key, paths in figures.items():
                logger.log_image(key, images=[str(f) for f in paths], step=step)
            return
        text = "\n\n".join(f"**{caption}** (references: {references})" for _, caption, references in rows)
        logger.experiment.add_text("val/samples", text, step)
        for key, paths in figures.items():
            for i, figure in enumerate(paths):
                with Image.open(figure) as picture:
                    pixels = np.asarray(picture.convert("RGB"))  # (H, W, 3)
                logger.experiment.add_image(f"{key}/{i}", pixels, step, dataformats="HWC")
