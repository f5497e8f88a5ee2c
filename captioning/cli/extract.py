"""``captioning extract``: pre-extract the frozen CNN's maps of a config's splits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from captioning.cli import common
from captioning.workflows.extraction import extract


def main(argv: Sequence[str]) -> dict[str, int]:
    parser = common.parser(
        "extract",
        "Run the frozen part of a config's encoder once over every image of its splits and store what the decoder "
        "reads (float16 memory maps + manifest); fit, validate, test, evaluate and ablate then read it with "
        "--data.features OUT. Other options (--config, --data.*, --model.*) are fit's.",
    )
    parser.add_argument("--out", type=Path, required=True, help="feature folder to write (or resume)")
    parser.add_argument("--splits", nargs="+", choices=["train", "val", "test"], default=["train", "val", "test"])
    parser.add_argument("--shard", type=int, default=0, help="this process writes shard K of --shards (0-based)")
    parser.add_argument("--shards", type=int, default=1, help="shards run as separate processes or GPUs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2, help="image-reading worker processes")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda:SHARD if available)")
    args, fit_args = parser.parse_known_args(argv)
    written = extract(
        fit_args,
        args.out,
        splits=args.splits,
        shard=args.shard,
        shards=args.shards,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
    )
    print(f"{args.out}: " + ", ".join(f"{split} {n} images written" for split, n in written.items()))
    return written
