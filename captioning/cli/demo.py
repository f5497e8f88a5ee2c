"""``captioning demo`` (what ``make demo`` runs): the whole pipeline on the synthetic shapes set
(:mod:`captioning.workflows.demo`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from captioning.cli import common
from captioning.workflows.demo import demo


def main(argv: Sequence[str]) -> None:
    parser = common.parser("demo", "The whole pipeline on the synthetic shapes set (what `make demo` runs).")
    parser.add_argument("--data", type=Path, default=Path("data/shapes"), help="shapes folder (made if absent)")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
    parser.add_argument("--config", default="configs/shapes.yaml", help="LightningCLI config of the model")
    parser.add_argument("--figures", type=int, default=4, help="test images to draw attention for")
    parser.add_argument("--seed", type=int, default=None, help="seed of both trainings (default: the config's)")
    args = parser.parse_args(argv)
    demo(args.data, args.out, config=args.config, figures=args.figures, seed=args.seed)
