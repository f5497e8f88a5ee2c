"""What a run was made with: seed, package versions, git commit, command line (``run.json`` in every run folder)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

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
        "versions": {p: _version(p) for p in PACKAGES},
        "git": git_commit(Path(__file__).resolve().parent),
    }


def write_run_record(path: Path, *, seed: int | bool | None, world_size: int) -> None:
    path.write_text(json.dumps(run_record(seed=seed, world_size=world_size), indent=2) + "\n")
