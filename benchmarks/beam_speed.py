"""Batched beam search against a per-image loop: images per second and the speed-up, one process, CPU.

The same :func:`captioning.decoding.beam_search` runs once over a batch (B images x K beams as B*K rows per step)
and once per image (K rows per step), on a small-width ResNet-18 with the ``soft`` and the 2-layer ``sca`` decoder
attention (random weights). The end token is suppressed so every search runs ``max_len`` + 1 steps in both modes:
equal work, and the comparison is not skewed by when captions happen to end. The CNN is included in both timings.
Run: ``.venv/bin/python benchmarks/beam_speed.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from captioning.decoding import beam_search
from captioning.models.captioner import Captioner, DecoderSpec, EncoderSpec

EOS = 2


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``run`` after one warm-up call (allocator, kernels)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def seconds_per_batch(
    captioner: Captioner, images: torch.Tensor, *, beam_size: int, max_len: int, repeats: int
) -> tuple[float, float]:
    """Seconds to caption ``images`` in one batched search, and one image at a time."""
    search = partial(beam_search, captioner, bos=1, eos=EOS, max_len=max_len, beam_size=beam_size)
    batched = median_seconds(lambda: search(images), repeats)
    looped = median_seconds(lambda: [search(images[i : i + 1]) for i in range(len(images))], repeats)
    return batched, looped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16, help="ResNet-18 base width (64 is torchvision's)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--beam-sizes", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--max-len", type=int, default=16)
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # on a shared machine, 1 thread avoids OpenMP spin-waiting on busy cores
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    encoder = EncoderSpec(depth=18, width=args.width)
    variants = {
        "soft": DecoderSpec(attention="soft", embed_dim=128, hidden_dim=256, attn_dim=128, dropout=0.0),
        "sca 2-layer": DecoderSpec(attention="sca", embed_dim=128, hidden_dim=256, attn_dim=128, dropout=0.0),
    }
    print(
        f"ResNet-18 width {args.width}, {args.image_size} px, batch {args.batch}, {args.max_len} words, "
        f"V = {args.vocab_size}, {torch.get_num_threads()} CPU threads; median of {args.repeats}"
    )
    print(f"  {'attention':12s} {'K':>2s} {'batched img/s':>14s} {'per-image img/s':>16s} {'speed-up':>9s}")
    for name, decoder in variants.items():
        captioner = Captioner.build(args.vocab_size, encoder, decoder).eval()
        with torch.no_grad():
            captioner.decoder.output.bias[EOS] = -1e9  # never end early: equal work in both modes
        for k in args.beam_sizes:
            batched, looped = seconds_per_batch(
                captioner, images, beam_size=k, max_len=args.max_len, repeats=args.repeats
            )
            print(
                f"  {name:12s} {k:2d} {args.batch / batched:14.1f} {args.batch / looped:16.1f} {looped / batched:8.2f}x"
            )


if __name__ == "__main__":
    main()
