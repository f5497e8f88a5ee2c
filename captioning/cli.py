"""The ``captioning`` command.

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI subcommands (configs in ``configs/``); ``prepare``,
``caption``, ``evaluate``, ``visualize``, ``ablate`` and ``demo`` are plain commands (``captioning/commands.py``).
A user mistake (:class:`CaptioningError`) prints one line and exits with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import WandbLogger

from captioning.callbacks import LastCheckpoint, PredictionsWriter, ValidationSamples
from captioning.data.datamodule import CaptionDataModule
from captioning.errors import CaptioningError
from captioning.module import CaptioningModule
from captioning.provenance import write_run_record

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


class CaptioningCLI(LightningCLI):
    """LightningCLI with the data->model links, a best-CIDEr checkpoint callback (``--checkpoint.*``), the resumable
    ``last.ckpt`` (``--last.every_n_train_steps``), and a writer of ``predict`` captions (``--predictions.output``,
    default ``predictions.json`` in the log folder). ``fit`` writes ``vocab.json`` and ``run.json`` (seed, versions,
    git commit) next to Lightning's ``config.yaml``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocabulary_words", "model.vocabulary", apply_on="instantiate")
        parser.link_arguments("data.vocabulary_rule", "model.vocabulary_rule", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.image_size")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last")
        parser.link_arguments("checkpoint.dirpath", "last.dirpath")
        parser.add_lightning_class_args(PredictionsWriter, "predictions")
        parser.add_lightning_class_args(ValidationSamples, "samples")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/CIDEr",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def before_fit(self) -> None:
        log_dir = self.trainer.log_dir
        if log_dir and self.trainer.is_global_zero:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.datamodule.vocab.save(Path(log_dir) / "vocab.json")
            seed = self.config.get(self.subcommand, {}).get("seed_everything")
            write_run_record(Path(log_dir) / "run.json", seed=seed, world_size=self.trainer.world_size)

    def after_fit(self) -> None:
        # Lightning leaves a wandb run open (a logger may be reused); a finished run has flushed its history and
        # summary to its (offline) folder, and the next run in this process starts a new one.
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and self.trainer.is_global_zero and logger._experiment is not None:
                logger.experiment.finish()


def cli_main(args: Sequence[str]) -> CaptioningCLI:
    """Runs a LightningCLI subcommand, e.g. ``cli_main(["fit", "--config", "configs/shapes.yaml"])``."""
    with warnings.catch_warnings():
        # `captioning fit ...` hands its own argv on as ``args`` on purpose; Lightning warns about exactly that
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return CaptioningCLI(
            CaptioningModule,
            CaptionDataModule,
            args=list(args),
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"description": "Train or evaluate a captioner (LightningCLI)."},
        )


def build_from_config(args: Sequence[str]) -> tuple[CaptioningModule, CaptionDataModule]:
    """The model and data module that ``captioning fit ARGS`` would train (``--config ...`` and overrides), built
    without running anything (e.g. for ``captioning extract``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        cli = CaptioningCLI(
            CaptioningModule,
            CaptionDataModule,
            args=list(args),
            run=False,
            save_config_callback=None,
            seed_everything_default=0,
            parser_kwargs={"description": "the model and data of a fit config"},
        )
    return cli.model, cli.datamodule


USAGE = """usage: captioning COMMAND [options]   (captioning COMMAND --help for each)

training and evaluation (LightningCLI, configs in configs/):
  fit        train:            captioning fit --config configs/shapes.yaml
  validate   score a checkpoint on the val split with the Trainer
  test       score a checkpoint on the test split with the Trainer
  predict    caption the test split with the Trainer (writes predictions.json)

tools:
  prepare    make a dataset:   captioning prepare shapes --out data/shapes
             check a dataset:  captioning prepare coco|coco2014|coco2017|flickr8k|flickr30k|custom --root DIR
  caption    caption images:   captioning caption IMAGE... --ckpt CKPT
  evaluate   score a split:    captioning evaluate --ckpt CKPT --data-root DIR --split test --out DIR
  visualize  attention maps:   captioning visualize IMAGE... --ckpt CKPT --out DIR
  ablate     compare variants: captioning ablate --config C --variants configs/ablation/*.yaml --out DIR
  extract    pre-extract the frozen CNN's maps: captioning extract --config C --out DIR (then --data.features DIR)
  demo       the whole pipeline on the synthetic shapes set (what `make demo` runs)

--debug (any command): show the traceback of a user error instead of one line.
"""


def main(argv: Sequence[str] | None = None) -> None:
    from captioning import commands

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        if not args or args[0] in ("-h", "--help"):
            print(USAGE, end="")
        elif args[0] in commands.COMMANDS:
            commands.COMMANDS[args[0]](args[1:])
        elif args[0] in LIGHTNING_COMMANDS:
            cli_main(args)
        else:
            raise CaptioningError(f"unknown command {args[0]!r}; see captioning --help")
    except CaptioningError as e:
        if debug:
            raise
        print(f"captioning: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
