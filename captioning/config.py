"""Configs: YAML files plus dotted overrides (``--model.decoder.attention sca``) -> the module, the data module and
the Trainer, through LightningCLI (jsonargparse reads the constructors' typed signatures, so every setting of
``configs/`` is a constructor argument and nothing parses YAML by hand).

:func:`run_config` runs a LightningCLI subcommand (``fit``, ``validate``, ``test``, ``predict``: what ``captioning
fit ...`` does); :func:`build` makes the objects a config describes without running anything, for the library's
workflows (:mod:`captioning.workflows`), which then call the Trainer themselves.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from captioning.callbacks import EncoderFinetuning, LastCheckpoint, PredictionsWriter, ValidationSamples
from captioning.data.datamodule import CaptionDataModule
from captioning.module import CaptioningModule
from captioning.provenance import finish_run_record, write_run_record

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


class CaptioningCLI(LightningCLI):
    """LightningCLI with the data->model links, a best-CIDEr checkpoint callback (``--checkpoint.*``), the resumable
    ``last.ckpt`` (``--last.every_n_train_steps``), the encoder's fine-tuning schedule (``--finetuning.*``), and a
    writer of ``predict`` captions (``--predictions.output``, default ``predictions.json`` in the log folder).
    ``fit`` writes ``vocab.json`` and ``run.json`` (seed, versions, git commit) next to Lightning's ``config.yaml``."""

    def __init__(self, *args, **kwargs) -> None:
        self.run_record: Path | None = None  # run.json of the run `fit` starts (rank 0); LightningCLI runs it in here
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocabulary_words", "model.vocabulary", apply_on="instantiate")
        parser.link_arguments("data.vocabulary_rule", "model.vocabulary_rule", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.image_size")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last")
        parser.link_arguments("checkpoint.dirpath", "last.dirpath")
        parser.add_lightning_class_args(PredictionsWriter, "predictions")
        parser.add_lightning_class_args(ValidationSamples, "samples")
        parser.add_lightning_class_args(EncoderFinetuning, "finetuning")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/CIDEr",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def before_fit(self) -> None:
        seed = self.config.get(self.subcommand, {}).get("seed_everything")
        self.run_record = record_run(self.trainer, self.datamodule, seed)

    def after_fit(self) -> None:
        finish_run(self.trainer, self.run_record)


def record_run(trainer: pl.Trainer, data: CaptionDataModule, seed: int | bool | None) -> Path | None:
    """``vocab.json`` and ``run.json`` (seed, versions, git commit, hardware) in the run's log folder, on rank 0;
    returns the ``run.json`` written (None on other ranks). Every rank calls it: ``trainer.log_dir`` is a broadcast."""
    log_dir = trainer.log_dir
    if not (log_dir and trainer.is_global_zero):
        return None
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    data.vocab.save(Path(log_dir) / "vocab.json")
    write_run_record(Path(log_dir) / "run.json", seed=seed, world_size=trainer.world_size)
    return Path(log_dir) / "run.json"


def finish_run(trainer: pl.Trainer, record: Path | None) -> None:
    """After ``fit``: its duration into ``record`` (``run.json``, from :func:`record_run`; no collective call, as the
    other ranks may have left), and the loggers finished. Lightning leaves a wandb run open (a logger may be reused);
    a finished run has flushed its history and summary to its (offline) folder, and the next in this process starts a
    new one."""
    if record is not None:
        finish_run_record(record)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero and logger._experiment is not None:
            logger.experiment.finish()


def run_config(args: Sequence[str]) -> CaptioningCLI:
    """Runs a LightningCLI subcommand, e.g. ``run_config(["fit", "--config", "configs/shapes.yaml"])``."""
    return _cli(args, parser_kwargs={"description": "Train or evaluate a captioner (LightningCLI)."})


def build(args: Sequence[str], *, save_config: bool = False) -> CaptioningCLI:
    """What ``captioning fit ARGS`` would train (``--config ...`` and overrides, no subcommand), built and seeded
    without running anything: ``.model``, ``.datamodule`` and ``.trainer`` (with ``save_config``, its callbacks write
    Lightning's ``config.yaml`` when it fits, as ``captioning fit`` does)."""
    return _cli(
        args,
        run=False,
        save_config_callback=SaveConfigCallback if save_config else None,
        parser_kwargs={"description": "the model and data of a fit config"},
    )


def _cli(args: Sequence[str], **options) -> CaptioningCLI:
    with warnings.catch_warnings():
        # `captioning fit ...` hands its own argv on as ``args`` on purpose; Lightning warns about exactly that
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return CaptioningCLI(
            CaptioningModule,
            CaptionDataModule,
            args=list(args),
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            **options,
        )
