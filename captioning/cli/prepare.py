"""``captioning prepare``: make the synthetic shapes set or the COCO-size stand-in, check a real dataset folder, or
fetch SPICE's models."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from captioning.cli import common
from captioning.data.cache import CACHE_FOLDER, ImageCache
from captioning.data.layouts import LAYOUTS
from captioning.data.prepare import prepare_dataset
from captioning.data.shapes import generate_shapes
from captioning.data.standin import generate_coco_standin
from captioning.metrics.spice import fetch_spice_models


def main(argv: Sequence[str]) -> None:
    parser = common.parser(
        "prepare",
        "Make the synthetic shapes set, check a real dataset folder (layout, annotations, every image; writes "
        "vocab.json, manifest.json, images.sha256, bad_images.tsv), or fetch SPICE's parser models.",
    )
    parser.add_argument(
        "dataset",
        choices=["shapes", "shapes-coco", *LAYOUTS, "spice"],
        help="shapes: generate the synthetic set; shapes-coco: a COCO-size stand-in in the COCO 2014 / Karpathy "
        "layout; coco (Karpathy split), coco2014/coco2017 (official files), flickr8k, flickr30k, custom: check a "
        "folder; spice: the CoreNLP jars SPICE needs (internet)",
    )
    parser.add_argument("--root", type=Path, help="dataset folder to check (all but shapes and spice)")
    parser.add_argument("--out", type=Path, help="shapes: folder to write; others: where reports go (default --root)")
    parser.add_argument("--train", type=int, default=4000, help="shapes: train images")
    parser.add_argument("--val", type=int, default=250, help="shapes: val images")
    parser.add_argument("--test", type=int, default=250, help="shapes: test images")
    parser.add_argument("--seed", type=int, default=0, help="shapes: generator seed")
    parser.add_argument("--scale", type=float, default=1.0, help="shapes-coco: fraction of COCO's 123,287 images")
    parser.add_argument("--image-size", type=int, help="shapes: image side (96); --cache: cached side (224)")
    parser.add_argument("--vocab-from", choices=["train", "all"], default="train", help="splits counted for vocab.json")
    parser.add_argument("--min-count", type=int, default=5, help="vocab.json keeps words seen this often")
    parser.add_argument("--no-merge-restval", action="store_true", help="Karpathy files: keep restval out of train")
    parser.add_argument("--workers", type=int, default=2, help="processes that check (and cache) images")
    parser.add_argument("--cache", action="store_true", help="also build the image cache (OUT/image_cache)")
    args = parser.parse_args(argv)
    if args.dataset == "spice":
        fetch_spice_models()
        return
    if args.dataset == "shapes-coco":
        if args.out is None:
            parser.error("prepare shapes-coco needs --out DIR")
        start = time.perf_counter()
        counts = generate_coco_standin(
            args.out, scale=args.scale, image_size=args.image_size or 32, seed=args.seed, workers=args.workers
        )
        seconds = time.perf_counter() - start
        print(f"wrote {args.out} in {seconds:.1f} s: " + ", ".join(f"{n} {split}" for split, n in counts.items()))
        return
    if args.dataset == "shapes":
        if args.out is None:
            parser.error("prepare shapes needs --out DIR")
        size = args.image_size or 96
        counts = generate_shapes(
            args.out, train=args.train, val=args.val, test=args.test, seed=args.seed, image_size=size
        )
        print(f"wrote {args.out}: " + ", ".join(f"{n} {split}" for split, n in counts.items()))
        if args.cache:
            paths = sorted((args.out / "images").rglob("*.png"))
            ImageCache.build(paths, args.out / CACHE_FOLDER, image_size=size, workers=args.workers)
        return
    if args.root is None:
        parser.error(f"prepare {args.dataset} needs --root DIR")
    report = prepare_dataset(
        args.dataset,
        args.root,
        out=args.out,
        vocab_from=args.vocab_from,
        min_count=args.min_count,
        merge_restval=not args.no_merge_restval,
        workers=args.workers,
        cache_size=(args.image_size or 224) if args.cache else None,
    )
    print(report.summary(args.dataset, args.root))
