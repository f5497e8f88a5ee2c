"""Ablation: attention variants trained and evaluated on one dataset config, same seed and budget.

Each variant is ``fit --config BASE --config VARIANT [overrides]`` from scratch, then ``evaluate`` on the test split
with its best-val-CIDEr checkpoint. Writes ``ablation.csv`` and ``ablation.md`` (variant, parameters, train time,
BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, and on datasets with boxes the right-object rate (the share of one-object
images whose caption names that object and no other, measured with or without attention) and the attention grounding
of the top attended layer: pointing-game accuracy, attention mass in the named objects' boxes, and the boxes' area
share, which is chance level for both), updated after every variant so an interrupted sweep keeps what it finished.
"""

from __future__ import annotations

import csv
import inspect
import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from captioning.data.datamodule import CaptionDataModule
from captioning.workflows.evaluation import evaluate
from captioning.workflows.extraction import extract
from captioning.workflows.training import train

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
NAMING = ("right_object",)  # object naming, any model (captioning.metrics.grounding)
GROUNDING = ("pointing", "mass", "area")  # of the top attended layer; area = chance (captioning.metrics.grounding)
HEADER = ("variant", "params", "train_s", *METRICS, *NAMING, *GROUNDING)


def ablate(
    config: str | Path,
    variants: Sequence[str | Path],
    out: str | Path,
    overrides: Sequence[str] = (),
    *,
    features: str | Path | None = None,
) -> list[dict]:
    """Trains and tests every variant (configs stacked on ``config``; ``overrides`` such as ``--trainer.max_epochs
    4`` go to every fit) into ``out/VARIANT``; returns the table's rows. With ``features``, every variant trains and
    tests on pre-extracted features of its frozen CNN in ``features/VARIANT`` (extracted there first when missing;
    each variant's attention reads different maps)."""
    out = Path(out)
    overrides = list(overrides)
    data = next((overrides[i + 1] for i, a in enumerate(overrides[:-1]) if a == "--data.root"), None)
    data = data or data_root(config)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in variants:
        name = Path(variant).stem
        fit_overrides, stored = list(overrides), None
        if features:
            stored = Path(features) / name
            extract(["--config", str(config), "--config", str(variant), *overrides], stored)  # resumes / no-op
            fit_overrides += ["--data.features", str(stored)]
        run = train([config, variant], data, out / name, fit_overrides)
        scores = evaluate(run.best, data, "test", out / name, features=stored)
        grounding_file = out / name / "grounding.json"
        grounding = json.loads(grounding_file.read_text()) if grounding_file.is_file() else {}
        row = {"variant": name, "params": run.parameters, "train_s": run.seconds}
        values = {**scores, **grounding}
        rows.append(row | {m: _number(values.get(m)) for m in HEADER[3:]})
        write_tables(rows, out)
    return rows


def write_tables(rows: list[dict], out: Path) -> None:
    """Writes ``ablation.csv`` (full precision) and ``ablation.md`` (a table with 3 decimals)."""
    with (out / "ablation.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = [row["variant"], f"{row['params'] / 1e6:.2f}M", f"{row['train_s']:.0f}"]
        lines.append("| " + " | ".join(cells + [f"{row[m]:.3f}".replace("nan", "-") for m in HEADER[3:]]) + " |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")


def _number(value: float | None) -> float:
    """NaN (shown as ``-``) for what was not measured: a metric the config skips, grounding without spatial maps, a
    right-object rate without boxes or one-object images."""
    return float("nan") if value is None else value


def data_root(config: str | Path) -> str:
    """The ``data.root`` of a config file (the data module's default when the file sets none)."""
    root = (yaml.safe_load(Path(config).read_text()) or {}).get("data", {}).get("root")
    return root or inspect.signature(CaptionDataModule).parameters["root"].default
