"""Cost curves at COCO scale: wall time and peak memory of every stage that grows with the dataset, at 1,000 /
10,000 / 123,287 images (COCO's Karpathy split), on the COCO-size stand-in (``captioning prepare shapes-coco``).

Stages, each in its own process (so that its peak resident memory, ``ru_maxrss`` of it and its workers, is its own):

    generate   the stand-in itself (32 px JPEGs, COCO's split sizes times the scale, 2 worker processes)
    prepare    ``captioning prepare coco``: annotations, vocabulary, every image decoded and checked, manifest
    setup      the data module: Karpathy file read, vocabulary, the three splits' records and datasets
    cache      the image cache (``--cache``) of every image at 32 px, 2 worker processes
    loader     one epoch of the training loader from the cache (batch 256, no model)
    extract    ``captioning extract`` of a frozen CBAM ResNet-18 (width 8, soft attention) at 32 px, every split
    score      the test split's captions against its other references with every metric, Java then Python
               tokenizer, and METEOR alone (at full size: 5,000 images x 4-6 references)
    evaluate   ``evaluate`` of a tiny checkpoint on the 5,000 test images in 1 and in 2 processes (full size only;
               the scores must be equal)

It prints one table and each stage's growth exponent k (time ~ n^k, the least-squares slope of log time against
log n over the sizes). Run: ``.venv/bin/python benchmarks/scale.py [--sizes 1000 10000 123287] [--work DIR]``
(about 20 minutes on 2 cores at the three sizes; ``--keep`` keeps the generated sets in DIR).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL = 123_287
STAGES = ("generate", "prepare", "setup", "cache", "loader", "extract", "score", "evaluate")
KARPATHY = {"annotations": "karpathy", "annotation_file": "dataset_coco.json", "image_dir": "."}


def _peak_mb() -> float:
    """Peak resident memory of this process and of its finished children (workers), MB (Linux: ru_maxrss in kB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def run_stage(stage: str, root: Path, n: int) -> dict:
    """One stage in this process -> {seconds, ...}; the caller adds the peak memory."""
    start = time.perf_counter()
    extra: dict = {}
    if stage == "generate":
        from captioning.data.standin import generate_coco_standin

        generate_coco_standin(root, scale=n / FULL, workers=2, show_progress=False)
    elif stage == "prepare":
        from captioning.data.prepare import prepare_dataset

        prepare_dataset("coco", root, out=root / "prepare", workers=2)
    elif stage == "setup":
        from captioning.data.datamodule import CaptionDataModule

        data = CaptionDataModule(str(root), image_size=32, min_count=5, image_cache="none", **KARPATHY)
        for split in ("train", "val", "test"):
            data.dataset(split)
        extra["train_images"] = len(data.records("train"))
    elif stage == "cache":
        from captioning.data.cache import CACHE_FOLDER, ImageCache

        paths = sorted([*root.glob("train2014/*.jpg"), *root.glob("val2014/*.jpg")])
        ImageCache.build(paths, root / CACHE_FOLDER, image_size=32, workers=2)
    elif stage == "loader":
        from captioning.data.datamodule import CaptionDataModule

        data = CaptionDataModule(str(root), image_size=32, batch_size=256, num_workers=0, **KARPATHY)
        start = time.perf_counter()  # the epoch only (the setup is its own stage)
        extra["batches"] = sum(1 for _ in data.train_dataloader())
    elif stage == "extract":
        from captioning.cli.extract import main as extract

        model = ["--model.encoder.width", "8", "--model.encoder.trainable", "false"]
        model += ["--model.decoder.attention", "soft", "--model.decoder.hidden_dim", "32"]
        data = [f"--data.root={root}", "--data.image_size=32", "--data.annotations=karpathy"]
        data += ["--data.annotation_file=dataset_coco.json", "--data.image_dir=.", "--data.min_count=5"]
        out = root / "features"
        shutil.rmtree(out, ignore_errors=True)
        extract([*model, *data, "--out", str(out), "--batch-size", "256", "--num-workers", "0", "--device", "cpu"])
    elif stage == "score":
        extra = _score(root)
    elif stage == "evaluate":
        extra = _evaluate(root)
    return {"seconds": time.perf_counter() - start, **extra}


def _score(root: Path) -> dict:
    """Every metric on the test split (candidate: its first caption; references: the others), both tokenizers."""
    from captioning.data.coco import read_karpathy
    from captioning.metrics import METRICS, coco_scores

    test = [r for r in read_karpathy(root / "dataset_coco.json", root) if r.split == "test"]
    candidates = {r.image_id: r.captions[0] for r in test}
    references = {r.image_id: list(r.captions[1:]) for r in test}
    times = {}
    for label, metrics, backend in (
        ("all_java", METRICS, "java"),
        ("all_python", METRICS, "python"),
        ("meteor_alone", ("METEOR",), "java"),
    ):
        start = time.perf_counter()
        coco_scores(candidates, references, metrics=metrics, tokenizer=backend)
        times[label] = time.perf_counter() - start
    return {"images": len(test), **times, "ratio_to_meteor": times["all_java"] / times["meteor_alone"]}


def _evaluate(root: Path) -> dict:
    """A tiny model trained for 2 steps, then ``evaluate`` of the test split in 1 and 2 processes."""
    from captioning.config import run_config

    run = root / "run"
    tiny = ["--config", str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")]
    data = [f"--data.root={root}", "--data.image_size=32", "--data.annotations=karpathy"]
    data += ["--data.annotation_file=dataset_coco.json", "--data.image_dir=.", "--data.min_count=5"]
    trainer = ["--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.logger=false"]
    run_config(["fit", *tiny, *data, *trainer, f"--trainer.default_root_dir={run}", f"--checkpoint.dirpath={run}"])
    ckpt = run / "last.ckpt"
    times, scores = {}, {}
    layout = ["--annotations", "karpathy", "--annotation-file", "dataset_coco.json", "--image-dir", "."]
    for devices in (1, 2):  # the command a user runs (DDP over gloo relaunches it per process)
        out = run / f"eval{devices}"
        command = [sys.executable, "-m", "captioning", "evaluate", "--ckpt", str(ckpt), "--data-root", str(root)]
        command += [*layout, "--split", "test", "--out", str(out), "--devices", str(devices), "--batch-size", "256"]
        start = time.perf_counter()
        subprocess.run([*command, "--no-spice"], check=True, capture_output=True)
        times[f"devices_{devices}"] = time.perf_counter() - start
        scores[devices] = json.loads((out / "scores.json").read_text())
        timing = json.loads((out / "timing.json").read_text())
        times |= {f"{k.removesuffix('_s')}_{devices}": v for k, v in timing.items() if k.endswith("_s")}
        results = json.loads((out / "results.json").read_text())
    return {**times, "equal": scores[1] == scores[2], "images": len(results), "CIDEr": scores[1]["CIDEr"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, FULL])
    parser.add_argument("--work", type=Path, default=None, help="where the stand-ins go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated sets")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # a child process: one stage
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        result = run_stage(args.stage, args.root, args.n)
        print("RESULT " + json.dumps({**result, "peak_mb": _peak_mb()}))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="scale_"))
    rows: dict[str, dict[int, dict]] = {stage: {} for stage in args.stages}
    for n in args.sizes:
        root = work / f"coco_{n}"
        for stage in args.stages:
            if stage == "evaluate" and n != max(args.sizes):
                continue
            command = [sys.executable, __file__, "--stage", stage, "--root", str(root), "--n", str(n)]
            done = subprocess.run(command, capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"stage {stage} at {n} images failed (exit {done.returncode})")
            rows[stage][n] = json.loads(line.removeprefix("RESULT "))
            print(f"{stage:9s} {n:>7,} images: {json.dumps(rows[stage][n])}", flush=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("\n| stage | " + " | ".join(f"{n:,} images: s, peak MB" for n in args.sizes) + " | k (time ~ n^k) |")
    print("|---|" + "---|" * (len(args.sizes) + 1))
    for stage, by_size in rows.items():
        cells = [
            f"{by_size[n]['seconds']:.1f}, {by_size[n]['peak_mb']:.0f}" if n in by_size else "-" for n in args.sizes
        ]
        print(f"| {stage} | " + " | ".join(cells) + f" | {_exponent(by_size)} |")
    if rows.get("score"):
        full = rows["score"][max(rows["score"])]
        print(
            f"\nscoring {full['images']:,} test images, every metric: Java tokenizer {full['all_java']:.1f} s, Python "
            f"{full['all_python']:.1f} s; METEOR alone {full['meteor_alone']:.1f} s: all = "
            f"{full['ratio_to_meteor']:.2f}x METEOR alone"
        )
    if rows.get("evaluate"):
        e = next(iter(rows["evaluate"].values()))
        print(f"evaluate, 1 process {e['devices_1']:.1f} s, 2 processes {e['devices_2']:.1f} s; equal: {e['equal']}")
        for d in (1, 2):
            parts = ", ".join(f"{k} {e[f'{k}_{d}']:.2f} s" for k in ("test", "gather", "dedupe", "score", "broadcast"))
            print(f"  {d} process{'es' if d > 1 else ''}: {parts} (the command's rest: start-up, data, writing)")


def _exponent(by_size: dict[int, dict]) -> str:
    points = [(math.log(n), math.log(max(r["seconds"], 1e-3))) for n, r in by_size.items()]
    if len(points) < 2:
        return "-"
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return f"{slope:.2f}"


if __name__ == "__main__":
    main()
