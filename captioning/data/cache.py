"""A preprocessed image cache: every image decoded, converted and resized once, stored as uint8 in one ``.npy`` file.

Layout in the cache folder: ``images_{S}.npy``, a (N, 3, S, S) uint8 array that numpy memory-maps, and
``images_{S}.json``, the index (one entry per source file: path, byte size, modification time, whether it decoded).
A row holds exactly what :func:`~captioning.data.images.load_resized` returns, so an image read from the cache is
bit-identical to one decoded from its file.

Why a memory-mapped ``.npy`` (numpy) rather than litdata, webdataset or HDF5: the images of a cache all have one
shape, so the cache is one dense array, and a ``.npy`` memory map gives random access to any row for a shuffled
epoch, shared through the page cache by every DataLoader worker, with no extra dependency. webdataset's tar shards
are read sequentially (shuffling only within a buffer); litdata is built for streaming chunks from object stores;
h5py handles must be reopened in each worker and add a compiled dependency, for the same dense array.

A cache is used for the files whose size and modification time still match the index; a changed or new file is
decoded from disk as usual, so a stale cache is never a silent wrong result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captioning.data.images import load_resized
from captioning.errors import CaptioningError

VERSION = 1
CACHE_FOLDER = "image_cache"  # where ``prepare --cache`` writes it, inside the dataset root (or ``--out``)


def _fingerprint(path: Path) -> tuple[int, int] | None:
    """(byte size, modification time in ns) of a file, or None when it is missing."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def identity(item: object) -> object:
    """A DataLoader ``collate_fn`` for ``batch_size=None`` loaders whose items are already what the caller wants
    (a module-level function: worker processes started by spawn must be able to import it)."""
    return item


class _Decode(Dataset):
    """Decodes and resizes one file per item, for a DataLoader that spreads the work over worker processes."""

    def __init__(self, paths: Sequence[Path], image_size: int) -> None:
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        # numpy, not a tensor: a worker sends each tensor through its own shared-memory segment (about 1 ms each,
        # most of a small image's cost), a numpy array through the pipe with the rest of the batch
        try:
            return index, load_resized(self.paths[index], self.image_size).numpy(), None
        except CaptioningError as e:
            return index, None, str(e)


class ImageCache:
    """Reads a cache built by :meth:`build` (see the module docstring).

    Args:
        folder: the cache folder.
        image_size: the square side the cache was built at.
    """

    def __init__(self, folder: str | Path, image_size: int) -> None:
        self.folder, self.image_size = Path(folder), image_size
        self.array_path, self.index_path = self.paths(self.folder, image_size)
        if not (self.array_path.is_file() and self.index_path.is_file()):
            raise CaptioningError(
                f"{self.array_path}: no image cache at size {image_size} (captioning prepare --cache)"
            )
        index = json.loads(self.index_path.read_text())
        if index.get("version") != VERSION or index.get("image_size") != image_size:
            raise CaptioningError(f"{self.index_path}: cache version or image size does not match; rebuild it")
        self.entries: dict[str, tuple[int, int, int, str | None]] = {
            e["path"]: (row, e["size"], e["mtime_ns"], e["problem"]) for row, e in enumerate(index["files"])
        }
        self._array: np.ndarray | None = None  # opened on first use, in each process (see __getstate__)
        self._resolved: dict[Path, str] = {}

    @staticmethod
    def paths(folder: Path, image_size: int) -> tuple[Path, Path]:
        return folder / f"images_{image_size}.npy", folder / f"images_{image_size}.json"

    @classmethod
    def exists(cls, folder: str | Path, image_size: int) -> bool:
        return all(p.is_file() for p in cls.paths(Path(folder), image_size))

    def __getstate__(self) -> dict:
        # A pickled memmap is a full in-memory copy: DataLoader workers (spawn) reopen the file instead.
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, path: Path) -> tuple[torch.Tensor | None, str | None] | None:
        """A file's cached (3, S, S) uint8 pixels, or (None, problem) when it did not decode at build time; None when
        the file is not in the cache or changed since (then the caller decodes it)."""
        key = self._resolved.get(path)
        if key is None:  # resolving costs ~0.1 ms (a syscall per path component): once per path and process
            key = self._resolved[path] = str(Path(path).resolve())
        entry = self.entries.get(key)
        if entry is None:
            return None
        row, size, mtime_ns, problem = entry
        if _fingerprint(Path(path)) != (size, mtime_ns):
            return None
        if problem is not None:
            return None, problem
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        return torch.from_numpy(np.array(self._array[row])), None  # a copy: the map is read-only

    @classmethod
    def build(cls, paths: Sequence[str | Path], folder: str | Path, *, image_size: int, workers: int = 0) -> ImageCache:
        """Decodes, converts and resizes every file once (``workers`` processes) into a new cache in ``folder``.

        Unreadable files are recorded with their problem (and read back as such); the array and index are written
        under temporary names and renamed at the end, so an interrupted build leaves no half cache behind.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = sorted({Path(p).resolve() for p in paths})
        array_path, index_path = cls.paths(folder, image_size)
        partial = array_path.with_suffix(".partial.npy")
        array = np.lib.format.open_memmap(
            partial, mode="w+", dtype=np.uint8, shape=(len(files), 3, image_size, image_size)
        )
        entries: list[dict] = [{} for _ in files]
        # Batches of 64 items (lists, not stacked): one transfer per batch from a worker instead of one per image.
        loader = DataLoader(_Decode(files, image_size), batch_size=64, num_workers=workers, collate_fn=identity)
        items = (item for batch in loader for item in batch)
        for row, pixels, problem in tqdm(
            items, total=len(files), desc=f"caching images at {image_size} px", unit="img"
        ):
            fingerprint = _fingerprint(files[row]) or (-1, -1)
            entries[row] = {
                "path": str(files[row]),
                "size": fingerprint[0],
                "mtime_ns": fingerprint[1],
                "problem": problem,
            }
            if pixels is not None:
                array[row] = pixels
        array.flush()
        del array
        index_path.unlink(missing_ok=True)  # no moment where an old index describes the new array
        os.replace(partial, array_path)
        index = {"version": VERSION, "image_size": image_size, "files": entries}
        index_path.with_suffix(".partial").write_text(json.dumps(index))
        os.replace(index_path.with_suffix(".partial"), index_path)
        return cls(folder, image_size)
