"""Training on pre-extracted features against training through the frozen CNN: images/s of each, as a ratio in the
same process, bytes per image stored, and counted FLOPs per training image of each COCO stage.

The model is the paper config's (configs/coco_resnet152_sca_paper.yaml): ResNet-152 at 224 px, frozen except
layer4.2.conv3, SCA-CNN C-S on layer4.2.conv2 and layer4, LSTM 1000, deep output; and the same with soft attention
(features: the final map). Weights are random (ImageNet weights cannot be downloaded here; the cost is the same).
A step is ``CaptioningModule.loss`` + backward + the optimizer on a small batch (``--batch`` images x 5 captions of
12 words, vocabulary 10,000), the time the median of ``--repeats`` steps after a warm-up step. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions, forward and backward).

The last table turns counted FLOPs into an epoch cost on one GPU for the README's recipe table: 113,287 training
images (82,783 for the paper's train-only split) at an assumed 30% of an H100's 989 TFLOP/s dense bf16, an
assumption until ``benchmarks/gpu.py`` (issue 16) measures it on a GPU, and an optimistic one: the decoder runs
word by word in small kernels, which seldom reach that rate. SCST's step is counted with 5 sampled captions of 16
words and a greedy one.
Run: ``.venv/bin/python benchmarks/features.py [--threads N] [--batch B] [--repeats R] [--smoke]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from captioning.data.dataset import Batch
from captioning.metrics.tokenize import ptb_tokenize
from captioning.models.captioner import DecoderSpec, EncoderSpec
from captioning.module import CaptioningModule, CrossEntropy
from captioning.scst import CiderReward, SelfCritical, SelfCriticalLoss

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", *(f"w{i}" for i in range(9996))]
GPU_RATE = 0.30 * 989e12  # assumed sustained FLOP/s on one H100 (30% of dense bf16 peak)


def model(attention: str, *, smoke: bool, train_modules: tuple[str, ...] = ("layer4.2.conv3",)) -> CaptioningModule:
    torch.manual_seed(0)
    width, depth = (8, 50) if smoke else (64, 152)
    encoder = EncoderSpec(depth=depth, width=width, trainable=False, train_modules=train_modules)
    sizes = {"embed_dim": 16, "hidden_dim": 32, "attn_dim": 16} if smoke else {"embed_dim": 100, "hidden_dim": 1000}
    decoder = DecoderSpec(attention=attention, output="deep", first_input="zero", dropout=0.5, **sizes)
    words = WORDS[:50] if smoke else WORDS
    return CaptioningModule(
        words, encoder=encoder, decoder=decoder, image_size=64 if smoke else 224, loss=CrossEntropy(attention_reg=0)
    )


def batch(module: CaptioningModule, images: int, *, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    size, vocab = module.hparams.image_size, len(module.vocab)
    tokens = torch.randint(4, vocab, (images * 5, 14), generator=g)  # 5 captions of 12 words
    tokens[:, 0], tokens[:, -1] = 1, 2
    return Batch(
        images=torch.randn(images, 3, size, size, generator=g),
        tokens=tokens,
        lengths=torch.full((images * 5,), 14),
        image_ids=list(range(images)),
        references=[[" ".join(f"w{i}" for i in range(12))] * 5] * images,
    )


def on_features(module: CaptioningModule, b: Batch) -> Batch:
    with torch.no_grad():
        maps = module.captioner.eval().features(b.images)
    module.train()
    return Batch(maps, b.tokens, b.lengths, b.image_ids, b.references)


def step_cost(module: CaptioningModule, batches: list[Batch], *, scst: bool = False) -> tuple[float, float]:
    """-> (median seconds per optimizer step, counted FLOPs of one step)."""
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()

    def step(b: Batch) -> None:
        loss = (module.self_critical(module.captioner, b.images, b.image_ids) if scst else module.loss(b))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(batches[0])  # warm-up
    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    times = []
    for b in batches[1:]:
        start = time.perf_counter()
        step(b)
        times.append(time.perf_counter() - start)
    return statistics.median(times), counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="images a step (x 5 captions)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="a tiny model, for the test suite")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} images x 5 captions")
    print("\n| attention | input | s / step | images / s | GFLOPs / image | stored bytes / image |")
    print("|---|---|---|---|---|---|")
    per_image: dict[str, float] = {}
    for attention in ("sca", "soft"):
        module = model(attention, smoke=args.smoke)
        images = [batch(module, args.batch, seed=s) for s in range(args.repeats + 1)]
        seconds, flops = step_cost(module, images)
        feats = [on_features(module, b) for b in images]
        f_seconds, f_flops = step_cost(module, feats)
        stored = sum(v[0].numel() for v in feats[0].images.values()) * 2  # float16
        pixels = 3 * module.hparams.image_size**2
        print(
            f"| {attention} | images | {seconds:.3f} | {args.batch / seconds:.2f} | {flops / args.batch / 1e9:.2f} "
            f"| {pixels:,} (uint8 pixels) |"
        )
        print(
            f"| {attention} | features | {f_seconds:.3f} | {args.batch / f_seconds:.2f} | "
            f"{f_flops / args.batch / 1e9:.2f} | {stored:,} (float16) |"
        )
        print(f"| {attention} | ratio | | **{seconds / f_seconds:.1f}x** | {flops / f_flops:.1f}x fewer | |")
        if attention == "sca":
            per_image["stage 1: cross-entropy on features (layer4.2.conv3 + decoder train)"] = f_flops / args.batch
            per_image["paper: the same on the train split only"] = f_flops / args.batch
            module.decoding = dataclasses.replace(module.decoding, max_len=16)
            module.self_critical = SelfCriticalLoss(
                SelfCritical(),
                CiderReward(ptb_tokenize({i: r for i, r in enumerate(images[0].references)}, backend="python")),
                bos=module.vocab.bos,
                eos=module.vocab.eos,
                max_len=16,
                suppress=module.suppressed,
                decode=module.vocab.decode,
                greedy=lambda images, m=module: m.generate(images, beam_size=1)[0],
            )
            _, s_flops = step_cost(module, feats[:2], scst=True)
            per_image["stage 3: SCST on features (5 samples + greedy)"] = s_flops / args.batch
            tuned = model("sca", smoke=args.smoke, train_modules=("layer4",))
            _, t_flops = step_cost(tuned, images[:2])
            per_image["stage 2: cross-entropy through the CNN, layer4 trains"] = t_flops / args.batch
    print(
        f"\nEpoch cost on one GPU from counted FLOPs, at an assumed {GPU_RATE / 1e12:.0f} TFLOP/s (see the docstring):"
    )
    print("| stage | GFLOPs / image | images / epoch | PFLOPs / epoch | minutes / epoch |")
    print("|---|---|---|---|---|")
    for stage, value in per_image.items():
        count = 82_783 if stage.startswith("paper") else 113_287
        epoch = value * count
        print(f"| {stage} | {value / 1e9:.1f} | {count:,} | {epoch / 1e15:.1f} | {epoch / GPU_RATE / 60:.1f} |")


if __name__ == "__main__":
    main()
