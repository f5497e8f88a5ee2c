"""``captioning ablate``: train and evaluate attention variants on one dataset config, same seed and budget.

    captioning ablate --config configs/shapes.yaml --variants configs/ablation/{none,soft,sca_cs}.yaml \\
        --out outputs/ablation [--trainer.max_epochs 4 ...]

Each variant is ``fit --config BASE --config VARIANT [overrides]`` from scratch, then ``evaluate`` on the test split
with its best-val-CIDEr checkpoint. Writes ``ablation.csv`` and ``ablation.md`` (variant, parameters, train time,
BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, and on datasets with boxes the right-object rate (the share of one-object
images whose caption names that object and no other, measured with or without attention) and the attention grounding
of the top attended layer: pointing-game accuracy, attention mass in the named objects' boxes, and the boxes' area
share, which is chance level for both), updated after every variant so an interrupted sweep keeps what it finished.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

from captioning.commands import extract, run_evaluation, run_training

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
NAMING = ("right_object",)  # object naming, any model (captioning.metrics.grounding)
GROUNDING = ("pointing", "mass", "area")  # of the top attended layer; area = chance (captioning.metrics.grounding)
HEADER = ("variant", "params", "train_s", *METRICS, *NAMING, *GROUNDING)


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


def main(argv: Sequence[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="captioning ablate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the dataset / base model config")
    parser.add_argument("--variants", nargs="+", required=True, help="configs stacked on --config, one per variant")
    parser.add_argument("--out", type=Path, required=True, help="folder for runs and the tables")
    parser.add_argument(
        "--features",
        type=Path,
        help="train and test every variant on pre-extracted features of its frozen CNN, in FEATURES/VARIANT "
        "(extracted there first when missing; each variant's attention reads different maps)",
    )
    args, overrides = parser.parse_known_args(argv)  # the rest (--trainer.max_epochs 4 ...) goes to every fit
    data = next((overrides[i + 1] for i, a in enumerate(overrides[:-1]) if a == "--data.root"), None)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in args.variants:
        name = Path(variant).stem
        fit_overrides, features = list(overrides), None
        if args.features:
            features = args.features / name
            configs = ["--config", args.config, "--config", variant, *overrides]
            extract([*configs, "--out", str(features), "--splits", "train", "val", "test"])  # resumes / no-op
            fit_overrides += ["--data.features", str(features)]
        run = run_training([args.config, variant], data or _data_root(args.config), args.out / name, fit_overrides)
        scores = run_evaluation(run.best, data or _data_root(args.config), "test", args.out / name, features=features)
        grounding_file = args.out / name / "grounding.json"
        grounding = json.loads(grounding_file.read_text()) if grounding_file.is_file() else {}
        row = {"variant": name, "params": run.parameters, "train_s": run.seconds}
        values = {**scores, **grounding}
        rows.append(row | {m: _number(values.get(m)) for m in HEADER[3:]})
        write_tables(rows, args.out)
    print((args.out / "ablation.md").read_text())
    return rows


def _number(value: float | None) -> float:
    """NaN (shown as ``-``) for what was not measured: a metric the config skips, grounding without spatial maps, a
    right-object rate without boxes or one-object images."""
    return float("nan") if value is None else value


def _data_root(config: str) -> str:
    """The ``data.root`` of a config file (the data module's default when the file sets none)."""
    import inspect

    import yaml

    from captioning.data.datamodule import CaptionDataModule

    root = (yaml.safe_load(Path(config).read_text()) or {}).get("data", {}).get("root")
    return root or inspect.signature(CaptionDataModule).parameters["root"].default
