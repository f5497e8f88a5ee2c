"""Image loading: JPEG decoding against the preprocessed image cache, images per second with 0 and 2 workers.

COCO-like files are generated once (``--images`` JPEGs of 640x480, quality 90, smooth random content, so they
compress like photos rather than like noise). The same :class:`~captioning.data.dataset.CaptionDataset` then reads
them through a DataLoader, once decoding every file and once from an :class:`~captioning.data.cache.ImageCache`
built at the training size, with ``num_workers`` 0 and 2. Each setting reads one warm-up epoch (page cache, worker
start), then the median of ``--repeats`` epochs; the ratio is cache / JPEG in the same process.
Run: ``.venv/bin/python benchmarks/loader_speed.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from captioning.data.cache import ImageCache
from captioning.data.dataset import CaptionDataset, collate
from captioning.data.records import CaptionRecord
from captioning.vocab import Vocabulary


def write_photos(folder: Path, count: int, *, seed: int = 0) -> list[Path]:
    """``count`` 640x480 JPEGs: random low-frequency colour fields plus mild noise (photo-like compression)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((640, 480), Image.Resampling.BICUBIC), dtype=np.int16)
        pixels = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"{i:05d}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def images_per_second(dataset: CaptionDataset, *, workers: int, batch_size: int, repeats: int) -> float:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=partial(collate, pad=0),
    )
    epochs = []
    for epoch in range(repeats + 1):
        start = time.perf_counter()
        for _ in loader:
            pass
        if epoch:  # the first epoch warms the page cache and starts the workers
            epochs.append(time.perf_counter() - start)
    return len(dataset) / statistics.median(epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=224, help="training side the images are resized to")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_photos(folder, args.images)
        records = [CaptionRecord(i, p, ("a photo",), "train") for i, p in enumerate(paths)]
        vocab = Vocabulary.build(["a photo"])
        start = time.perf_counter()
        cache = ImageCache.build(paths, folder / "cache", image_size=args.image_size, workers=2)
        build = time.perf_counter() - start
        settings = {"JPEG": None, "cache": cache}
        print(
            f"{args.images} JPEGs of 640x480 -> {args.image_size} px, batch {args.batch}; median of {args.repeats} "
            f"epochs after a warm-up; cache built in {build:.1f} s with 2 workers"
        )
        print(f"  {'workers':>7s} {'JPEG img/s':>11s} {'cache img/s':>12s} {'ratio':>6s}")
        for workers in (0, 2):
            speed = {
                name: images_per_second(
                    CaptionDataset(
                        records, vocab, image_size=args.image_size, max_len=16, sampling="images", image_cache=c
                    ),
                    workers=workers,
                    batch_size=args.batch,
                    repeats=args.repeats,
                )
                for name, c in settings.items()
            }
            print(f"  {workers:7d} {speed['JPEG']:11.0f} {speed['cache']:12.0f} {speed['cache'] / speed['JPEG']:5.1f}x")


if __name__ == "__main__":
    main()
