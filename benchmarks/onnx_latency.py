"""CPU latency per image: the exported ONNX graphs with the numpy driver against PyTorch's ``beam_search``.

The same model (random weights) is exported with :func:`captioning.export.onnx.export_onnx` and captions one image
at a time both ways, in this process: :class:`~captioning.export.onnx_driver.OnnxCaptioner` (onnxruntime graphs,
numpy search) and ``normalize_image`` + :func:`captioning.decoding.beam_search` under ``torch.inference_mode``. Both
start from uint8 pixels. ``min_len = max_len`` makes every caption exactly ``--words`` words long in both, so both
do equal work whatever the random weights would end on; the last column checks the captions are the same.
Time is the median of ``--repeats`` calls after one warm-up call; the ratio is PyTorch's time over onnxruntime's.

Sizes: the demo's model (configs/shapes.yaml: width-16 CBAM ResNet-18, two-layer SCA-CNN C-S, 96 px, a vocabulary
about the shapes set's) and, without ``--quick``, ResNet-50 at 224 px with soft attention and the COCO configs'
decoder (embed 256, hidden 512, attention 512, 10,000 words). Beam sizes 1 (greedy) and 3.
Run: ``.venv/bin/python benchmarks/onnx_latency.py [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime
import torch

from captioning.data.images import normalize_image
from captioning.decoding import DecodingSpec, beam_search
from captioning.export.onnx import export_onnx
from captioning.export.onnx_driver import OnnxCaptioner
from captioning.models.captioner import Captioner, DecoderSpec, EncoderSpec
from captioning.vocab import SPECIALS, Vocabulary


@dataclass(frozen=True)
class Setting:
    name: str
    encoder: EncoderSpec
    decoder: DecoderSpec
    image_size: int
    vocab_size: int


def settings(quick: bool, smoke: bool) -> list[Setting]:
    if smoke:  # tiny, for the test suite: that the script runs, not what it measures
        tiny = DecoderSpec(attention="soft", embed_dim=8, hidden_dim=8, attn_dim=8, dropout=0.0)
        return [Setting("smoke", EncoderSpec(arch="vgg", depth=16, width=4), tiny, 32, 11)]
    demo = DecoderSpec(attention="sca", sca_order="cs", embed_dim=64, hidden_dim=256, attn_dim=64, dropout=0.3)
    rows = [Setting("demo sca 96px", EncoderSpec(depth=18, attention="cbam", width=16), demo, 96, 48)]
    if not quick:
        coco = DecoderSpec(attention="soft", embed_dim=256, hidden_dim=512, attn_dim=512, dropout=0.5)
        rows.append(Setting("R50 soft 224px", EncoderSpec(depth=50), coco, 224, 10_000))
    return rows


def median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``run`` in milliseconds, after one warm-up call (allocator, kernels, ORT's arenas)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(setting: Setting, *, words: int, repeats: int, threads: int) -> list[tuple[int, float, float, bool]]:
    """-> (beam size, PyTorch ms, onnxruntime ms, same caption) for beam sizes 1 and 3, one image a call."""
    vocab = Vocabulary([*SPECIALS, *(f"w{i}" for i in range(setting.vocab_size - len(SPECIALS)))])
    torch.manual_seed(0)
    captioner = Captioner.build(len(vocab), setting.encoder, setting.decoder, bos=vocab.bos).eval()
    size = setting.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)  # (1, S, S, 3)
    decoding = DecodingSpec(max_len=words, min_len=words)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(captioner, vocab, image_size=size, decoding=decoding, out=folder)
        driver = OnnxCaptioner(folder, threads=threads)
        for beam in (1, 3):

            def pytorch(beam: int = beam) -> torch.Tensor:
                images = normalize_image(torch.from_numpy(pixels).permute(0, 3, 1, 2))  # (1, 3, S, S)
                generation = beam_search(
                    captioner,
                    images,
                    bos=vocab.bos,
                    eos=vocab.eos,
                    max_len=words,
                    min_len=words,
                    beam_size=beam,
                    suppress=(vocab.pad, vocab.bos, vocab.unk),
                )
                return generation.tokens

            def onnx(beam: int = beam) -> list[dict]:
                return driver.caption(pixels, beam_size=beam)

            same = onnx()[0]["caption"] == vocab.decode(pytorch()[0])
            rows.append((beam, median_ms(pytorch, repeats), median_ms(onnx, repeats), same))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--words", type=int, default=12, help="caption length (COCO's captions average ~10 words)")
    parser.add_argument("--quick", action="store_true", help="the demo's model only (no ResNet-50)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, for the test suite")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for both (default: torch's); 1 on a shared machine"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()  # onnxruntime gets the same number
    words = 3 if args.smoke else args.words
    results = {
        s.name: measure(s, words=words, repeats=args.repeats, threads=threads) for s in settings(args.quick, args.smoke)
    }
    print(
        f"{threads} CPU threads, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; one image a call, "
        f"{words} words, median of {args.repeats}"
    )
    print("| setting | beam | PyTorch ms | onnxruntime ms | PyTorch / onnxruntime | same caption |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        for beam, torch_ms, onnx_ms, same in rows:
            ratio = torch_ms / onnx_ms
            print(f"| {name} | {beam} | {torch_ms:.2f} | {onnx_ms:.2f} | {ratio:.2f} | {'yes' if same else 'no'} |")


if __name__ == "__main__":
    main()
