"""Training-step cost of soft attention and SCA-CNN: counted FLOPs, time and achieved FLOP/s, side by side.

One optimizer step as ``fit`` runs it (``CaptioningModule.loss`` with teacher forcing on the rows still going, its
backward pass and AdamW), on real shapes captions (a small shapes set is generated in a temporary folder) and random
images. FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over forward and backward (matrix
products and convolutions, 2 FLOPs a multiply-add; elementwise work is not counted), time is the median of
``--repeats`` steps after one warm-up step, and FLOP/s = counted FLOPs / time. Then a profile of one step of each
variant (``torch.profiler``), its self CPU time grouped by operator kind, and the 15 most expensive operators.

Sizes: the demo's model (CBAM ResNet-18, 96 px, 3 references per image, embed 64, hidden 256, attention 64) at
width 16 and 32 with the earlier demo's 32 images a step, at width 16 with today's 64 (configs/shapes.yaml), and
ResNet-50 at 224 px (batch 8 x 3 references, the COCO configs' decoder: embed 256, hidden 512,
attention 512). Run: ``.venv/bin/python benchmarks/train_step.py [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from captioning.data.datamodule import CaptionDataModule
from captioning.data.dataset import Batch
from captioning.data.shapes import generate_shapes
from captioning.models.captioner import DecoderSpec, EncoderSpec
from captioning.module import CaptioningModule, CrossEntropy


@dataclass(frozen=True)
class Setting:
    name: str
    encoder: EncoderSpec
    decoder: DecoderSpec
    image_size: int
    batch_size: int
    references: int = 3


def settings(quick: bool, smoke: bool = False) -> list[Setting]:
    demo = {"embed_dim": 64, "hidden_dim": 256, "attn_dim": 64, "dropout": 0.3}
    if smoke:  # tiny, for the test suite: that the script runs, not what it measures
        tiny = {"embed_dim": 8, "hidden_dim": 16, "attn_dim": 8, "dropout": 0.0}
        encoder = EncoderSpec(depth=18, attention="cbam", width=8)
        return [Setting(f"{a} smoke", encoder, DecoderSpec(attention=a, **tiny), 64, 4) for a in ("soft", "sca")]
    coco = {"embed_dim": 256, "hidden_dim": 512, "attn_dim": 512, "dropout": 0.5}
    rows = []
    for width, batch in ((16, 32), (32, 32), (16, 64)):  # the earlier demo's batch at both widths; today's demo
        encoder = EncoderSpec(depth=18, attention="cbam", width=width)
        for attention in ("soft", "sca"):
            decoder = DecoderSpec(attention=attention, **demo)
            rows.append(Setting(f"{attention} w{width} b{batch} 96px", encoder, decoder, 96, batch))
    if not quick:
        for attention in ("soft", "sca"):
            decoder = DecoderSpec(attention=attention, **coco)
            rows.append(Setting(f"{attention} R50 b8 224px", EncoderSpec(depth=50), decoder, 224, 8))
    return rows


def batches(data: Path, setting: Setting, count: int) -> tuple[list[str], list[Batch]]:
    """Real shapes captions (their lengths drive the rows that run) with random images at the setting's size."""
    module = CaptionDataModule(
        str(data), batch_size=setting.batch_size, references_per_image=setting.references, num_workers=0
    )
    loader = iter(module.train_dataloader())
    out = []
    for _ in range(count):
        batch = next(loader)
        size = setting.image_size
        batch.images = torch.randn(len(batch.image_ids), 3, size, size)
        out.append(batch)
    return module.vocabulary_words, out


def measure(setting: Setting, data: Path, repeats: int) -> tuple[float, float, torch.profiler.profile]:
    """-> (counted FLOPs of one step, median seconds per step, a profile of one step)."""
    words, steps = batches(data, setting, repeats + 2)
    torch.manual_seed(0)
    module = CaptioningModule(
        words,
        encoder=setting.encoder,
        decoder=setting.decoder,
        image_size=setting.image_size,
        loss=CrossEntropy(attention_reg=0.0),
    ).train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)

    def step(batch: Batch) -> None:
        loss = module.loss(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(steps[0])  # warm-up: allocator, kernels
    with FlopCounterMode(display=False) as counter:
        loss = module.loss(steps[1])["loss"]
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    times = []
    for batch in steps[2:]:
        start = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(steps[1])
    return counter.get_total_flops(), statistics.median(times), prof


# Operator kinds by aten name, first match wins (self CPU time; a backward kernel counts with its forward's kind).
GROUPS = (
    ("convolution", r"conv"),
    ("matrix products", r"^(mm|addmm|bmm|addmv|mv|matmul|linear|baddbmm|dot)$"),
    ("batch norm", r"batch_norm"),
    ("LSTM cell", r"lstm|thnn_fused"),
    (
        "views (no data moved)",
        r"^(view|unsafe_view|as_strided|t|transpose|unsqueeze|squeeze|expand|expand_as|reshape|"
        r"permute|select|slice|narrow|alias|detach|unbind|flatten|view_as|split_with_sizes|to|promote_types|lift_fresh)$",
    ),
    ("reductions / softmax", r"sum|mean|amax|max|norm|softmax|nll|cross_entropy|logsumexp"),
    ("copies / cat / index / fill", r"copy|cat|index|gather|scatter|stack|clone|embedding|fill|zero|pad|empty|split"),
    ("optimizer", r"foreach|adam"),
    ("elementwise", r"."),  # mul, add, sigmoid, tanh, relu (threshold), addcmul, dropout, ...
)


def group_of(name: str) -> str:
    base = re.sub(r"_backward$", "", name.removeprefix("aten::").lstrip("_").split(".")[0])
    return next(group for group, pattern in GROUPS if re.search(pattern, base))


def breakdown(prof: torch.profiler.profile) -> tuple[dict[str, float], int, list[tuple[str, float, int]]]:
    """-> (self CPU ms per operator group, operator calls, the top operators as (name, ms, calls))."""
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    groups: dict[str, float] = defaultdict(float)
    for event in events:
        groups[group_of(event.key)] += event.self_cpu_time_total / 1000
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]
    return dict(groups), sum(e.count for e in events), [(e.key, e.self_cpu_time_total / 1000, e.count) for e in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the demo's sizes only (no ResNet-50)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, for the test suite")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "shapes"
        chosen = settings(args.quick, args.smoke)
        train = (args.repeats + 2) * max(s.batch_size for s in chosen)
        generate_shapes(data, train=train, val=1, test=1, show_progress=False)
        results = {s.name: measure(s, data, args.repeats) for s in chosen}
    threads = torch.get_num_threads()
    print(f"{threads} CPU threads, torch {torch.__version__}; one training step (forward, backward, AdamW)")
    print(f"{'setting':22s} {'GFLOP':>8s} {'s/step':>8s} {'GFLOP/s':>8s}  ratio to soft (FLOPs, time)")
    for name, (flops, seconds, _) in results.items():
        soft = results.get(name.replace("sca", "soft"))
        ratio = f"  {flops / soft[0]:.2f}x, {seconds / soft[1]:.2f}x" if soft and name.startswith("sca") else ""
        print(f"{name:22s} {flops / 1e9:8.2f} {seconds:8.3f} {flops / seconds / 1e9:8.1f}{ratio}")
    for name, (_, _, prof) in results.items():
        groups, calls, top = breakdown(prof)
        total = sum(groups.values())
        print(f"\n{name}: {calls} operator calls, {total:.0f} ms self CPU time")
        for group, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
            print(f"  {group:22s} {ms:8.1f} ms  {ms / total:6.1%}")
        print("  top operators:", ", ".join(f"{k.removeprefix('aten::')} {ms:.1f} ms/{n}" for k, ms, n in top[:8]))


if __name__ == "__main__":
    main()
