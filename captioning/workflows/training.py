"""Training: a config (and overrides) from scratch into a run folder."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from captioning.config import build, finish_run, record_run


@dataclass
class TrainingRun:
    """What :func:`train` leaves behind."""

    best: Path  # the best-val-CIDEr checkpoint
    seconds: float  # wall time of ``fit``
    parameters: int  # trainable and frozen parameters of the model


def train(
    configs: Sequence[str | Path], data: str | Path, run: str | Path, overrides: Sequence[str] = ()
) -> TrainingRun:
    """Trains the model of ``configs`` (stacked, later ones win; then ``overrides`` such as ``--trainer.max_epochs
    4``) on the dataset folder ``data`` from scratch into ``run`` (a rerun replaces it): what ``captioning fit
    --config C1 --config C2 ...`` does, with the same ``config.yaml``, ``vocab.json``, ``run.json`` and checkpoints
    (``run/checkpoints/best.ckpt``, ``last.ckpt``)."""
    start = time.perf_counter()
    cli = build(fit_arguments(configs, data, run, overrides)[1:], save_config=True)
    record = record_run(cli.trainer, cli.datamodule, cli.config.get("seed_everything"))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    finish_run(cli.trainer, record)
    seconds = time.perf_counter() - start
    return TrainingRun(Path(run) / "checkpoints" / "best.ckpt", seconds, sum(p.numel() for p in cli.model.parameters()))


def fit_arguments(
    configs: Sequence[str | Path], data: str | Path, run: str | Path, overrides: Sequence[str] = ()
) -> list[str]:
    """The ``captioning fit`` command line of :func:`train` (``fit`` first); clears ``run`` (a rerun must not pick
    up an older best.ckpt)."""
    run = Path(run)
    shutil.rmtree(run, ignore_errors=True)
    args = ["fit", *(a for c in configs for a in ("--config", str(c))), "--data.root", str(data)]
    return [*args, "--trainer.default_root_dir", str(run), "--checkpoint.dirpath", str(run / "checkpoints"), *overrides]
