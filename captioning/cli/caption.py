"""``captioning caption``: captions of image files."""

from __future__ import annotations

import json
from collections.abc import Sequence

from captioning.cli import common
from captioning.module import load_checkpoint
from captioning.workflows.inference import caption_images


def main(argv: Sequence[str]) -> None:
    parser = common.parser("caption", "Caption images with a trained checkpoint.")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--ckpt", required=True, help="checkpoint (.ckpt) written by fit")
    parser.add_argument("--beam-size", type=int, default=None, help="beams (default: the checkpoint's)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {image, caption}")
    args = parser.parse_args(argv)
    module = load_checkpoint(args.ckpt)
    results = caption_images(module, args.images, beam_size=args.beam_size)
    if args.json:
        print(json.dumps([{"image": p, "caption": r.caption} for p, r in zip(args.images, results, strict=True)]))
    else:
        for path, result in zip(args.images, results, strict=True):
            print(f"{path}\t{result.caption}")
