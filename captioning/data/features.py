"""Pre-extracted CNN features: float16 memory-mapped arrays with a manifest, written by ``captioning extract``.

A frozen encoder computes the same maps for an image in every epoch: the official SCA-CNN code (its
data/make_coco.py), like most captioning codebases, precomputes them once. What is stored is what the decoder attention
reads from below the layers it recomputes (``Captioner.features``): for SCA the last block's input and the lowest
attended map, for ``soft``/``none`` the final map.

Layout of a feature folder:

    manifest.json            what made the features (``identity``: encoder, weights checksum, input size and
                             transform, attention, stored maps and their shapes) and the shard count
    {split}/ids.json         the split's image ids, in row order
    {split}/{name}.npy       (N, C, h, w) float16, one per stored map (numpy ``.npy``, memory-mapped)
    {split}/bad_{k}.json     shard k's rows whose image could not be read (skipped with a warning, as images are)
    {split}/done_{k}.json    shard k's progress: the rows it has written (an interrupted run resumes there)

Why ``.npy`` memory maps (as the image cache, :mod:`captioning.data.cache`): one dense array per map, random access
for shuffled epochs, shared through the page cache by every loader worker, no extra dependency.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from captioning.data.records import DataWarning
from captioning.errors import CaptioningError, ConfigError
from captioning.models.captioner import Captioner

VERSION = 1
MANIFEST = "manifest.json"
DTYPE = np.float16  # half the bytes of float32; the decoder computes in float32 (tests bound the difference)


def shard_rows(count: int, shard: int, shards: int) -> range:
    """The rows of shard ``shard`` of ``shards``: contiguous, sizes differing by at most one."""
    return range(count * shard // shards, count * (shard + 1) // shards)


def write_json(path: Path, value: object) -> None:
    """Writes JSON through a temporary file and a rename, so that an interrupted run never leaves half a file."""
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    partial.write_text(json.dumps(value, indent=1))
    partial.replace(path)


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def first_difference(stored: dict, wanted: dict) -> str | None:
    """The first field (dotted name) where two identities differ, as ``name: stored X, wanted Y``; None if equal."""
    a, b = _flatten(stored), _flatten(wanted)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key}: the features have {a.get(key)!r}, this model {b.get(key)!r}"
    return None


class FeatureStore:
    """A feature folder written by ``captioning extract`` (see the module docstring), for reading.

    Raises a one-line :class:`CaptioningError` naming the folder when there is no manifest or it is not one.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        try:
            self.manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise CaptioningError(f"{path}: no feature manifest (write one with captioning extract)") from None
        except json.JSONDecodeError as e:
            raise CaptioningError(f"{path}: not a feature manifest ({e})") from None
        if self.manifest.get("version") != VERSION:
            raise CaptioningError(f"{path}: feature format {self.manifest.get('version')}, this code reads {VERSION}")
        self.identity: dict = self.manifest["identity"]
        self.shards: int = self.manifest["shards"]
        self._splits: dict[str, FeatureSplit] = {}

    @property
    def image_size(self) -> int:
        return int(self.identity["image_size"])

    def check(self, identity: dict) -> None:
        """Refuses, in one line naming the first difference, features made for another encoder, weights, input size
        or attention than ``identity`` describes."""
        difference = first_difference(self.identity, identity)
        if difference is not None:
            raise ConfigError(f"{self.folder}: features made for another model ({difference}); extract them again")

    def split(self, name: str) -> FeatureSplit:
        """The split's features; refuses a split that is missing or not completely extracted."""
        if name not in self._splits:
            folder = self.folder / name
            ids_path = folder / "ids.json"
            if not ids_path.is_file():
                raise CaptioningError(f"{folder}: no {name} features (captioning extract --splits {name})")
            ids = json.loads(ids_path.read_text())
            done = sum(_done(folder, k) for k in range(self.shards))
            if done < len(ids):
                raise CaptioningError(
                    f"{folder}: {done} of {len(ids)} images extracted; rerun captioning extract to finish (it resumes)"
                )
            self._splits[name] = FeatureSplit(folder, ids, list(self.identity["features"]))
        return self._splits[name]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_splits": {}}  # loader workers reopen the memory maps


def _done(folder: Path, shard: int) -> int:
    path = folder / f"done_{shard}.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else 0


class FeatureSplit:
    """One split's stored maps, by image id."""

    def __init__(self, folder: Path, ids: list[int], names: list[str]) -> None:
        self.folder, self.ids, self.names = folder, ids, names
        self.rows = {image_id: row for row, image_id in enumerate(ids)}
        self.bad: dict[int, str] = {}  # row -> the problem, from every shard's list
        for path in sorted(folder.glob("bad_*.json")):
            self.bad |= {int(k): v for k, v in json.loads(path.read_text()).items()}
        self._arrays: dict[str, np.ndarray] | None = None  # opened on first use, in each process

    def missing(self, image_ids: list[int]) -> list[int]:
        return [i for i in image_ids if i not in self.rows]

    def row(self, image_id: int) -> dict[str, torch.Tensor] | None:
        """The image's maps as float32 tensors {name: (C, h, w)}; None, with a :class:`DataWarning`, for an image
        that could not be read at extraction."""
        row = self.rows[image_id]
        if row in self.bad:
            warnings.warn(f"skipped: {self.bad[row]} (recorded when the features were extracted)", DataWarning, 2)
            return None
        if self._arrays is None:
            self._arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in self.names}
        return {name: torch.from_numpy(array[row].astype(np.float32)) for name, array in self._arrays.items()}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}


class FeatureWriter:
    """Writes one shard of a feature folder, resuming where an earlier run of the same shard stopped.

    Args:
        folder: the feature folder (created).
        identity: what makes the features (see ``CaptioningModule.feature_identity``); a folder holding another
            model's features, or written with another shard count, is refused.
        shard, shards: this process writes shard ``shard`` of ``shards`` (contiguous row ranges of every split).
    """

    def __init__(self, folder: str | Path, identity: dict, *, shard: int = 0, shards: int = 1) -> None:
        if not 0 <= shard < shards:
            raise CaptioningError(f"shard {shard} of {shards}: the shard must be 0 .. {shards - 1}")
        self.folder, self.identity, self.shard, self.shards = Path(folder), identity, shard, shards
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = {"version": VERSION, "identity": identity, "shards": shards}
        path = self.folder / MANIFEST
        if path.is_file():
            existing = FeatureStore(self.folder)
            existing.check(identity)
            if existing.shards != shards:
                raise CaptioningError(f"{path}: written with {existing.shards} shards, this run has {shards}")
        else:
            write_json(path, manifest)

    def open_split(self, name: str, ids: list[int]) -> tuple[range, int, dict[str, np.ndarray]]:
        """-> this shard's rows of the split, how many of them are written already, and the writable arrays."""
        folder = self.folder / name
        folder.mkdir(exist_ok=True)
        ids_path = folder / "ids.json"
        if ids_path.is_file():
            if json.loads(ids_path.read_text()) != ids:
                raise CaptioningError(f"{ids_path}: the {name} split's images changed since; write to a new --out")
        else:
            write_json(ids_path, ids)
        arrays = {}
        for feature, shape in self.identity["features"].items():
            path = folder / f"{feature}.npy"
            if path.is_file():
                arrays[feature] = np.load(path, mmap_mode="r+")
            else:  # every shard may create it; the one that does first wins the rename, the others open that
                partial = path.with_name(f"{feature}.{os.getpid()}.partial.npy")
                np.lib.format.open_memmap(partial, mode="w+", dtype=DTYPE, shape=(len(ids), *shape)).flush()
                if not path.exists():
                    partial.replace(path)
                else:
                    partial.unlink()
                arrays[feature] = np.load(path, mmap_mode="r+")
        return shard_rows(len(ids), self.shard, self.shards), _done(folder, self.shard), arrays

    def record(self, name: str, arrays: dict[str, np.ndarray], rows: int, bad: dict[int, str]) -> None:
        """Makes the written rows durable, then records this shard's progress (``rows`` written) and bad rows."""
        for array in arrays.values():
            array.flush()
        folder = self.folder / name
        if bad:
            path = folder / f"bad_{self.shard}.json"
            known = json.loads(path.read_text()) if path.is_file() else {}
            write_json(path, known | {str(k): v for k, v in bad.items()})
        write_json(folder / f"done_{self.shard}.json", {"rows": rows})


def frozen_features(captioner: Captioner, image_size: int) -> tuple[dict[str, list[int]], str]:
    """The maps :meth:`Captioner.features` stores for one image ({name: [C, h, w]}), and a SHA-256 of the encoder
    weights and buffers they depend on. Which parameters they depend on is read off autograd (those with a gradient
    path from a probe image to the maps); a parameter among them that trains is refused (:class:`ConfigError`)."""
    encoder = captioner.encoder
    named = dict(encoder.named_parameters())
    trains = {name for name, p in named.items() if p.requires_grad}
    training = captioner.training
    captioner.eval()  # what extraction runs: BN on running statistics
    try:
        for p in named.values():
            p.requires_grad_(True)
        probe = torch.zeros(1, 3, image_size, image_size, device=next(encoder.parameters()).device)
        with torch.enable_grad():
            maps = captioner.features(probe)
            grads = torch.autograd.grad(sum(m.sum() for m in maps.values()), list(named.values()), allow_unused=True)
    finally:
        for name, p in named.items():
            p.requires_grad_(name in trains)
        captioner.train(training)
    used = {name for name, g in zip(named, grads, strict=True) if g is not None}
    if trained := sorted(used & trains):
        raise ConfigError(
            f"pre-extracted features stand for a frozen CNN, but encoder.{trained[0]} ({len(trained)} trained "
            "parameters) lies below the stored maps: freeze it (encoder.trainable false, train_attention false, "
            "train_modules above the lowest attended layer) or train without --data.features"
        )
    owners = {name.rpartition(".")[0] for name in used}  # the modules whose parameters the maps read
    digest = hashlib.sha256()
    for key, value in sorted(encoder.state_dict().items()):
        if key.rpartition(".")[0] in owners:  # their weights and buffers (BN running statistics)
            digest.update(key.encode())
            digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype's bytes
    return {name: list(m.shape[1:]) for name, m in maps.items()}, digest.hexdigest()
