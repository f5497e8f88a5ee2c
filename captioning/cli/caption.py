"""``captioning caption``: captions of image files, folders and glob patterns; with ``--out``, into a resumable
``.jsonl`` or ``.csv`` file (its format: :mod:`captioning.workflows.inference`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from captioning.api import load
from captioning.cli import common
from captioning.workflows.inference import caption_files, image_files


def main(argv: Sequence[str]) -> None:
    parser = common.parser("caption", "Caption images with a trained checkpoint or an exported model.")
    parser.add_argument("images", nargs="+", help="image files, folders (walked for images) or glob patterns")
    parser.add_argument(
        "--ckpt", required=True, help="checkpoint (.ckpt) written by fit, a folder written by export, or a Hub id"
    )
    parser.add_argument("--beam-size", type=common.positive, default=None, help="beams (default: the model's)")
    parser.add_argument("--batch-size", type=common.positive, default=32, help="images per forward pass (default: 32)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON list of {image, caption}")
    output.add_argument(
        "--out",
        default=None,
        help="write captions.jsonl or captions.csv: unreadable images are recorded and skipped, a rerun resumes",
    )
    args = parser.parse_args(argv)
    files = image_files(args.images)
    model = load(args.ckpt)
    if args.out:
        run = caption_files(
            model, files, args.out, decoding=model.settings(beam_size=args.beam_size), batch_size=args.batch_size
        )
        print(f"{run.out}: {run.captioned} images captioned, {run.already} already there", file=sys.stderr)
        if run.failed:
            print(f"{len(run.failed)} unreadable images skipped (recorded in {run.out}):", file=sys.stderr)
            for _, error in run.failed:
                print(f"  {error}", file=sys.stderr)
        return
    results = model.caption(files, beam_size=args.beam_size, batch_size=args.batch_size)
    if args.json:
        print(json.dumps([{"image": str(p), "caption": r.caption} for p, r in zip(files, results, strict=True)]))
    else:
        for path, result in zip(files, results, strict=True):
            print(f"{path}\t{result.caption}")
