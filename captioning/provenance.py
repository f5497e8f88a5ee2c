"""What a run was made with: seed, package versions, git commit, command line, hardware, and how long its ``fit`` took
(``run.json`` in every run folder)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("captioning", "torch", "torchvision", "pytorch-lightning", "torchdata", "pycocoevalcap", "numpy")


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True).stdout


def git_commit(folder: Path) -> dict[str, str | bool] | None:
    """The commit checked out at ``folder`` and whether tracked files differ from it; None outside a git checkout."""
    try:
        commit = _git(folder, "rev-parse", "HEAD").strip()
        dirty = bool(_git(folder, "status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def run_record(*, seed: int | bool | None, world_size: int) -> dict:
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "world_size": world_size,
        "argv": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hardware": hardware(),
        "versions": {p: _version(p) for p in PACKAGES},
        "git": git_commit(Path(__file__).resolve().parent),
    }


def write_run_record(path: Path, *, seed: int | bool | None, world_size: int) -> None:
    path.write_text(json.dumps(run_record(seed=seed, world_size=world_size), indent=2) + "\n")


def hardware() -> dict:
    """The machine a run trains on: its CPU model and core count, and the CUDA devices torch sees (by name)."""
    cpu = platform.processor() or None
    with contextlib.suppress(OSError, StopIteration):  # Linux names the model; platform.processor() says "x86_64"
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]  # () without CUDA
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "gpus": gpus}


def finish_run_record(path: Path) -> None:
    """Adds when the run's ``fit`` ended and how long it took (``fit_seconds``) to its ``run.json``."""
    try:
        record = json.loads(path.read_text())
        started = datetime.fromisoformat(record["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # no record of the start (a run folder of an older release): nothing to measure against
    finished = datetime.now(UTC)
    record |= {"finished": finished.isoformat(timespec="seconds"), "fit_seconds": (finished - started).total_seconds()}
    path.write_text(json.dumps(record, indent=2) + "\n")
