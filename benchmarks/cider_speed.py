"""CIDEr-D speed: captioning.metrics.cider.CiderD against pycocoevalcap's Cider, same numbers, one process.

5,000 images x 5 references (a COCO Karpathy split), tokenized captions of 8-14 words drawn from a Zipf-like
vocabulary of 5,000 words; document frequencies from the scored references, as in the COCO evaluation. Prints the
median time of each, the ratio (target: at least 10x) and checks every per-image score agrees to 1e-9.
Run: ``.venv/bin/python benchmarks/cider_speed.py``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
from pycocoevalcap.cider.cider import Cider

from captioning.metrics.cider import CiderD


def make_corpus(images: int, references: int, *, vocab: int = 5000, seed: int = 0):
    """Candidates {id: caption} and references {id: [captions]}, words drawn with weights 1/rank."""
    rng = random.Random(seed)
    words = [f"w{rank}" for rank in range(vocab)]
    weights = [1 / (rank + 1) for rank in range(vocab)]

    def caption() -> str:
        return " ".join(rng.choices(words, weights, k=rng.randint(8, 14)))

    refs = {image_id: [caption() for _ in range(references)] for image_id in range(images)}
    return {image_id: caption() for image_id in range(images)}, refs


def median_seconds(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--references", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    candidates, references = make_corpus(args.images, args.references)
    res = {image_id: [text] for image_id, text in candidates.items()}

    slow, (slow_score, slow_scores) = median_seconds(lambda: Cider().compute_score(references, res), args.repeats)
    fast, (fast_score, fast_scores) = median_seconds(lambda: CiderD().score(candidates, references), args.repeats)

    difference = max(abs(fast_score - slow_score), float(np.max(np.abs(np.asarray(fast_scores) - slow_scores))))
    if difference > 1e-9:
        raise SystemExit(f"CIDEr-D scores differ from pycocoevalcap's by {difference:.3g}")
    print(f"CIDEr-D, {args.images} images x {args.references} references, median of {args.repeats} runs:")
    print(f"  pycocoevalcap Cider  {slow:7.3f} s   corpus score {slow_score:.12f}")
    print(f"  CiderD (vectorized)  {fast:7.3f} s   corpus score {fast_score:.12f}")
    print(f"  {slow / fast:.1f}x faster; largest difference {difference:.2g}")


if __name__ == "__main__":
    main()
