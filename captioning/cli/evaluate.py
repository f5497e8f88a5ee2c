"""``captioning evaluate``: a checkpoint's captions of a split, scored."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import yaml

from captioning.cli import common
from captioning.errors import CaptioningError
from captioning.metrics import WITH_SPICE
from captioning.viz.tables import grounding_markdown
from captioning.workflows.evaluation import evaluate

LAYOUT_KEYS = ("annotations", "annotation_file", "image_dir", "coco_splits", "merge_restval")


def data_layout(config: str | None, root: str | None, overrides: dict) -> tuple[str, dict]:
    """The dataset folder and file layout for ``evaluate``: a config's ``data:`` section (e.g.
    ``configs/data/flickr8k.yaml``; only its root and layout keys, the image size is the checkpoint's), then the
    explicit ``root`` and ``overrides`` on top.

    Read as YAML, not through the config parser (:mod:`captioning.config`): that parser would build the config's
    whole model and data module, while the checkpoint fixes the model and only these keys are wanted.
    """
    section: dict = {}
    if config:
        try:
            section = (yaml.safe_load(Path(config).read_text()) or {}).get("data") or {}
        except (OSError, yaml.YAMLError) as e:
            raise CaptioningError(f"{config}: cannot read the data config ({e})") from e
    layout = {k: v for k, v in section.items() if k in LAYOUT_KEYS}
    layout |= {k: v for k, v in overrides.items() if v is not None}
    root = root or section.get("root")
    if not root:
        raise CaptioningError("evaluate needs --data-root DIR (or a --data-config whose data section has a root)")
    return str(root), layout


def main(argv: Sequence[str]) -> dict[str, float]:
    parser = common.parser("evaluate", "Caption a split and score it with the COCO metrics.")
    parser.add_argument("--ckpt", required=True, help="checkpoint (.ckpt) written by fit")
    parser.add_argument("--data-root", help="dataset folder (as for fit's --data.root)")
    parser.add_argument("--data-config", help="a config with the dataset's layout, e.g. configs/data/flickr8k.yaml")
    parser.add_argument("--annotations", choices=["coco", "karpathy", "custom"], help="file layout (default coco)")
    parser.add_argument("--annotation-file", help="karpathy: the split file; custom: captions.csv or .jsonl")
    parser.add_argument("--image-dir", help="image folder inside the dataset folder (default images)")
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--out", required=True, help="folder for results.json, scores.json, per_image.json")
    parser.add_argument("--beam-size", type=int, default=None, help="beams (default: the checkpoint's)")
    parser.add_argument("--min-len", type=int, default=None, help="fewest words (default: the checkpoint's)")
    parser.add_argument("--length-penalty", choices=["none", "average", "gnmt"], default=None, help="beam ranking")
    parser.add_argument("--block-trigrams", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--devices", type=int, default=1, help="processes; >1 on CPU runs DDP over gloo")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--spice", action=argparse.BooleanOptionalAction, default=True, help=common.SPICE_HELP)
    parser.add_argument(
        "--metrics",
        nargs="+",
        choices=WITH_SPICE,
        help="score only these (e.g. --metrics CIDEr; default: all, SPICE as --spice says)",
    )
    parser.add_argument("--report", action="store_true", help="also write OUT/report.html (one self-contained page)")
    parser.add_argument("--report-max", type=int, default=1000, help="images shown in the report at most")
    parser.add_argument("--features", help="pre-extracted features of the checkpoint's CNN (captioning extract)")
    args = parser.parse_args(argv)
    if args.report_max < 1:
        parser.error(f"--report-max must be at least 1, not {args.report_max}")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    explicit = {"annotations": args.annotations, "annotation_file": args.annotation_file, "image_dir": args.image_dir}
    root, layout = data_layout(args.data_config, args.data_root, explicit)
    scores = evaluate(
        args.ckpt,
        root,
        args.split,
        args.out,
        beam_size=args.beam_size,
        decoding={
            "min_len": args.min_len,
            "length_penalty": args.length_penalty,
            "block_trigrams": args.block_trigrams,
        },
        devices=args.devices,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        spice=args.spice,
        metrics=args.metrics,
        report=args.report,
        report_max=args.report_max,
        layout=layout,
        features=args.features,
    )
    if scores:
        print(json.dumps(scores, indent=2))
        grounding = Path(args.out) / "grounding.json"
        if grounding.is_file():
            print("\n" + grounding_markdown(json.loads(grounding.read_text())), end="")
    return scores
