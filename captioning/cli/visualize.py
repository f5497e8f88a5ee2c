"""``captioning visualize``: attention figures of image files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from captioning.checkpoints import load_checkpoint
from captioning.cli import common
from captioning.workflows.inference import visualize_images


def main(argv: Sequence[str]) -> list[Path]:
    parser = common.parser(
        "visualize",
        "Draw, per image, each generated word over its spatial attention map (one row per attended layer) and, "
        "for channel attention, the weights over words x channels; optionally the backbone's CBAM gates.",
    )
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--ckpt", required=True, help="checkpoint (.ckpt) written by fit")
    parser.add_argument("--beam-size", type=int, default=None, help="beams (default: the checkpoint's)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNG figures")
    parser.add_argument("--top-k", type=int, default=5, help="channels listed per word in the channel figure")
    parser.add_argument(
        "--gates",
        nargs="+",
        metavar="BLOCK",
        help="also draw the CBAM/SE gates of these backbone blocks (e.g. layer1.0 layer4.1, or all)",
    )
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k must be at least 1, not {args.top_k}")
    if args.gates and "all" in args.gates and len(args.gates) > 1:
        parser.error("--gates takes block names or all, not both")
    module = load_checkpoint(args.ckpt)
    drawn = visualize_images(
        module, args.images, args.out, beam_size=args.beam_size, top_k=args.top_k, gates=args.gates, source=args.ckpt
    )
    for path, (item, files) in zip(args.images, drawn, strict=True):
        print("\t".join([str(path), item.caption, *map(str, files)]))
    return [file for _, files in drawn for file in files]
