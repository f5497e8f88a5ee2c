"""``captioning ablate``: train and evaluate attention variants on one dataset config, same seed and budget.

    captioning ablate --config configs/shapes.yaml --variants configs/ablation/{none,soft,sca_cs}.yaml \\
        --out outputs/ablation [--trainer.max_epochs 4 ...]

What each variant runs and what the tables hold: :mod:`captioning.workflows.ablation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from captioning.cli import common
from captioning.workflows.ablation import ablate


def main(argv: Sequence[str]) -> list[dict]:
    parser = common.parser("ablate", __doc__.splitlines()[0].split(": ", 1)[1])
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
    rows = ablate(args.config, args.variants, args.out, overrides, features=args.features)
    print((args.out / "ablation.md").read_text())
    return rows
