"""One-command GPU benchmark, for the first GPU machine the project gets (at most about 8 minutes on one GPU).

Measures, in one process, on synthetic 224-px images (random weights: the cost is the weights' shape, not values):

1. Training throughput (images/s) and peak GPU memory of the COCO ResNet-152 SCA-CNN model
   (configs/coco_resnet152_sca_paper.yaml's sizes: frozen CNN but layer4.2.conv3, LSTM 1000, deep output, 10,000
   words, 5 captions of 12 words an image) in bf16 autocast, through the frozen CNN and on pre-extracted features,
   and the same for soft attention; an MFU estimate = counted FLOPs per second / the GPU's dense bf16 peak
   (``torch.utils.flop_counter``: matrix products and convolutions, forward and backward).
2. The largest batch that fits (doubling until out of memory, capped at ``--max-batch``), SCA on images and features.
3. Beam search at K = 5: images/s of ``CaptioningModule.generate`` for SCA and soft.
4. A 1-GPU DDP ``fit`` of a few steps of configs/smoke.yaml on a generated shapes set, then ``evaluate`` of its
   checkpoint on the GPU and on the CPU: captions that agree and the CIDEr-D difference (parity of devices).

Prints one table at the end and writes it as JSON (``--out``, default gpu_benchmark.json). ``--smoke`` runs every
part at a tiny size on whatever device there is (the CPU in the test suite), so the script cannot rot.
Run: ``.venv/bin/python benchmarks/gpu.py [--out FILE] [--peak-tflops T]`` (or ``benchmarks/gpu.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from captioning.data.dataset import Batch
from captioning.data.shapes import generate_shapes
from captioning.module import CaptioningModule

sys.path.insert(0, str(Path(__file__).resolve().parent))
import features as paper  # the sibling benchmark's model (benchmarks/ is not a package)

ROOT = Path(__file__).resolve().parents[1]
# Dense bf16 peak FLOP/s by device name (vendor data sheets, no sparsity); --peak-tflops for others.
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12, "V100": 125e12}


def _model(attention: str, smoke: bool) -> CaptioningModule:
    """The paper model of ``benchmarks/features.py`` (one definition for both benchmarks)."""
    return paper.model(attention, smoke=smoke)


def _batch(module: CaptioningModule, images: int, device: torch.device, *, features: bool) -> Batch:
    size, vocab = module.hparams.image_size, len(module.vocab)
    tokens = torch.randint(4, vocab, (images * 5, 14), device=device)
    tokens[:, 0], tokens[:, -1] = 1, 2
    pixels = torch.randn(images, 3, size, size, device=device)
    inputs = pixels
    if features:
        with torch.no_grad():
            inputs = module.captioner.eval().features(pixels)
        module.train()
    refs = [["w1 w2 w3"] * 5] * images
    return Batch(inputs, tokens, torch.full((images * 5,), 14, device=device), list(range(images)), refs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> float:
    """GB: the GPU's peak allocation since the last reset, or this process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def train_rate(module: CaptioningModule, batch: Batch, device: torch.device, steps: int) -> dict:
    """images/s, counted FLOPs per image, peak memory of bf16 training steps on one batch."""
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def step() -> None:
        with autocast:
            loss = module.loss(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up (kernels, allocator)
    with FlopCounterMode(display=False) as counter:
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    images = len(batch.image_ids)
    seconds = statistics.median(times)
    return {
        "images_per_s": images / seconds,
        "gflops_per_image": counter.get_total_flops() / images / 1e9,
        "flops_per_s": counter.get_total_flops() / seconds,
        "peak_gb": _peak_memory(device),
    }


def largest_batch(attention: str, device: torch.device, *, features: bool, smoke: bool, cap: int) -> int:
    """The largest power-of-two batch whose bf16 training step runs (out of memory stops the doubling)."""
    fits, size = 0, 1
    while size <= cap:
        module = _model(attention, smoke).to(device)
        try:
            train_rate(module, _batch(module, size, device, features=features), device, steps=1)
            fits, size = size, size * 2
        except torch.OutOfMemoryError:
            break
        finally:
            del module
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return fits


def beam_rate(module: CaptioningModule, images: torch.Tensor, device: torch.device) -> float:
    module.generate(images, beam_size=5)  # warm-up
    _sync(device)
    start = time.perf_counter()
    module.generate(images, beam_size=5)
    _sync(device)
    return images.shape[0] / (time.perf_counter() - start)


def fit_and_parity(device: torch.device, smoke: bool, work: Path) -> dict:
    """A 1-GPU DDP fit of a few steps on shapes, then evaluate on the GPU and on the CPU."""
    data = work / "shapes"
    generate_shapes(data, train=64 if smoke else 512, val=16, test=16 if smoke else 64, seed=1, show_progress=False)
    run = work / "run"
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    command = [sys.executable, "-m", "captioning", "fit", "--config", str(ROOT / "configs" / "smoke.yaml")]
    command += ["--data.root", str(data), "--trainer.accelerator", accelerator, "--trainer.devices", "1"]
    command += ["--trainer.strategy", "ddp", "--trainer.max_steps", "4" if smoke else "50", "--trainer.logger", "false"]
    command += ["--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(run)]
    command += ["--checkpoint.dirpath", str(run)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    fit_s = time.perf_counter() - start
    results = {}
    for where, env in (("gpu", {}), ("cpu", {"CUDA_VISIBLE_DEVICES": ""})):
        if where == "gpu" and device.type != "cuda":
            continue
        out = work / f"eval_{where}"
        evaluate = [sys.executable, "-m", "captioning", "evaluate", "--ckpt", str(run / "last.ckpt")]
        evaluate += ["--data-root", str(data), "--split", "test", "--out", str(out), "--metrics", "CIDEr"]
        subprocess.run(evaluate, check=True, capture_output=True, env={**os.environ, **env})
        captions = {r["image_id"]: r["caption"] for r in json.loads((out / "results.json").read_text())}
        results[where] = (captions, json.loads((out / "scores.json").read_text())["CIDEr"])
    row = {"ddp_fit_s": fit_s, "cpu_CIDEr": results["cpu"][1]}
    if "gpu" in results:
        gpu, cpu = results["gpu"][0], results["cpu"][0]
        row |= {"gpu_CIDEr": results["gpu"][1], "captions_agree": sum(gpu[i] == cpu[i] for i in cpu) / len(cpu)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any device (the test suite's CPU run)")
    parser.add_argument("--batch", type=int, default=None, help="training images a step (default 32; smoke 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting (default 10; smoke 1)")
    parser.add_argument("--max-batch", type=int, default=None, help="the batch search's cap (default 512; smoke 4)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, TFLOP/s")
    parser.add_argument("--out", type=Path, default=Path("gpu_benchmark.json"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((v for k, v in PEAKS.items() if k in name), None)
    batch = args.batch or (2 if args.smoke else 32)
    steps = args.steps or (1 if args.smoke else 10)
    cap = args.max_batch or (4 if args.smoke else 512)
    print(f"device {name}, torch {torch.__version__}, bf16 autocast, batch {batch} images x 5 captions", flush=True)
    report: dict = {"device": name, "torch": torch.__version__, "batch": batch, "peak_flops": peak, "train": []}
    for attention in ("sca", "soft"):
        for features in (False, True):
            module = _model(attention, args.smoke).to(device)
            row = train_rate(module, _batch(module, batch, device, features=features), device, steps)
            row |= {"attention": attention, "input": "features" if features else "images"}
            row["mfu"] = row["flops_per_s"] / peak if peak else None
            report["train"].append(row)
            print(json.dumps(row), flush=True)
        images = torch.randn(batch, 3, module.hparams.image_size, module.hparams.image_size, device=device)
        report[f"beam5_images_per_s_{attention}"] = beam_rate(module.eval(), images, device)
        del module
    report["largest_batch"] = {
        kind: largest_batch("sca", device, features=kind == "features", smoke=args.smoke, cap=cap)
        for kind in ("images", "features")
    }
    with tempfile.TemporaryDirectory() as work:
        report["parity"] = fit_and_parity(device, args.smoke, Path(work))
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\n{name}: one table (also in {args.out})")
    print("| attention | input | images/s | GFLOPs/image | MFU | peak GB |")
    print("|---|---|---|---|---|---|")
    for row in report["train"]:
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "- (no --peak-tflops)"
        print(
            f"| {row['attention']} | {row['input']} | {row['images_per_s']:.1f} | {row['gflops_per_image']:.1f} | "
            f"{mfu} | {row['peak_gb']:.2f} |"
        )
    sca, soft = report["beam5_images_per_s_sca"], report["beam5_images_per_s_soft"]
    print(f"beam search K=5: SCA {sca:.1f} img/s, soft {soft:.1f} img/s")
    print(f"largest batch that fits (SCA, cap {cap}): {report['largest_batch']}")
    print(f"1-device DDP fit and evaluate parity: {json.dumps(report['parity'])}")


if __name__ == "__main__":
    main()
