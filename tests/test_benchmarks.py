"""The benchmarks run (``--smoke``: tiny sizes), so that they cannot rot between the runs the README quotes."""

import json
import runpy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(capsys, script: str, *args: str) -> str:
    """``python benchmarks/SCRIPT ARGS``, run in this process as ``__main__`` (no second Python start): its stdout.
    The thread count and import path a script changes are put back after."""
    threads = torch.get_num_threads()
    argv, path = sys.argv, list(sys.path)
    sys.argv = [str(ROOT / "benchmarks" / script), *args]
    capsys.readouterr()
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.argv, sys.path[:] = argv, path  # gpu.py puts benchmarks/ on the path
        torch.set_num_threads(threads)
    return capsys.readouterr().out


def test_train_step_benchmark_prints_flops_time_and_the_profile_groups(capsys):
    stdout = run_benchmark(capsys, "train_step.py", "--smoke", "--repeats", "1", "--threads", "1")
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("setting"))
    soft, sca = (lines[header + k].split() for k in (1, 2))
    assert soft[:2] == ["soft", "smoke"] and sca[:2] == ["sca", "smoke"]
    gflop = {"soft": float(soft[2]), "sca": float(sca[2])}
    assert 0 < gflop["soft"] < gflop["sca"]  # SCA recomputes a conv per word: more counted FLOPs
    seconds, rate = float(sca[3]), float(sca[4])
    assert abs(rate * seconds - gflop["sca"]) <= 0.05 * gflop["sca"] + 0.01  # GFLOP/s = counted GFLOP / time
    assert lines[0].startswith("1 CPU threads")  # --threads is applied
    assert "operator calls" in stdout and "convolution" in stdout and "matrix products" in stdout


def test_features_benchmark_prints_the_ratio_bytes_and_stage_costs(capsys):
    stdout = run_benchmark(capsys, "features.py", "--smoke", "--repeats", "1", "--threads", "1")
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line.split("|") for line in stdout.splitlines()}
    for attention in ("sca", "soft"):
        images, features = rows[(attention, "images")], rows[(attention, "features")]
        assert float(features[5]) < float(images[5])  # the frozen CNN's FLOPs are gone
        assert rows[(attention, "ratio")][4].strip().startswith("**")
    # width 8 ResNet-50 at 64 px: SCA stores the block input (256 x 2 x 2) and layer4.2.conv2 (64 x 2 x 2) in float16
    assert rows[("sca", "features")][6].strip() == "2,560 (float16)"
    stages = [line for line in stdout.splitlines() if line.startswith(("| stage ", "| paper"))]
    assert len(stages) == 5 and all(float(row.split("|")[2]) > 0 for row in stages[1:])  # header + 4 stages


def test_gpu_benchmark_smoke_runs_every_part_and_writes_its_table_as_json(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    stdout = run_benchmark(capsys, "gpu.py", "--smoke", "--out", str(out))
    report = json.loads(out.read_text())
    assert [(r["attention"], r["input"]) for r in report["train"]] == [
        ("sca", "images"),
        ("sca", "features"),
        ("soft", "images"),
        ("soft", "features"),
    ]
    assert all(r["images_per_s"] > 0 and r["gflops_per_image"] > 0 for r in report["train"])
    assert report["train"][1]["gflops_per_image"] < report["train"][0]["gflops_per_image"]  # features skip the CNN
    assert report["largest_batch"] == {"images": 4, "features": 4}  # the smoke cap: nothing runs out on the CPU
    assert report["beam5_images_per_s_sca"] > 0 and report["parity"]["ddp_fit_s"] > 0
    assert 0 <= report["parity"]["cpu_CIDEr"] <= 10
    assert "| sca | features |" in stdout
