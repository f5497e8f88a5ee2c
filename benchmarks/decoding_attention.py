"""Decoding cost of the decoder attentions: time per generated caption, as ratios to ``soft``, one process.

ResNet-50 at 224 x 224 on the CPU, batch 16, greedy decoding of 16 words (the end token is suppressed so every
variant decodes the same number of steps). SCA recomputes the last block's upper layers at every word, batched over
all rows (images x beams): no Python loop over images. Run: ``.venv/bin/python benchmarks/decoding_attention.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from captioning.decoding import beam_search
from captioning.models.captioner import Captioner, DecoderSpec, EncoderSpec

VARIANTS = {
    "soft": DecoderSpec(attention="soft", embed_dim=256, hidden_dim=512, attn_dim=512),
    "sca 1-layer": DecoderSpec(attention="sca", embed_dim=256, hidden_dim=512, attn_dim=512, sca_layers=("layer4",)),
    "sca 2-layer": DecoderSpec(attention="sca", embed_dim=256, hidden_dim=512, attn_dim=512),
}


def time_decoding(captioner: Captioner, images: torch.Tensor, *, max_len: int, beam_size: int, repeats: int) -> float:
    """Median seconds of one batched decode (CNN included)."""
    times = []
    for _ in range(repeats + 1):  # the first run warms up the allocator and kernels
        start = time.perf_counter()
        beam_search(captioner, images, bos=1, eos=2, max_len=max_len, beam_size=beam_size)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--max-len", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    results = {}
    for name, decoder in VARIANTS.items():
        captioner = Captioner.build(1000, EncoderSpec(depth=args.depth), decoder).eval()
        with torch.no_grad():
            captioner.decoder.output.bias[2] = -1e9  # never end early: equal work for every variant
        seconds = time_decoding(captioner, images, max_len=args.max_len, beam_size=args.beam_size, repeats=args.repeats)
        results[name] = seconds / args.batch
    print(
        f"ResNet-{args.depth}, {args.image_size} px, batch {args.batch}, beam {args.beam_size}, {args.max_len} words,"
    )
    print(f"{torch.get_num_threads()} CPU threads; seconds per caption, ratio to soft:")
    for name, per_caption in results.items():
        print(f"  {name:12s} {per_caption * 1000:8.1f} ms   {per_caption / results['soft']:.2f}x")


if __name__ == "__main__":
    main()
