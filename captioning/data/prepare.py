"""``captioning prepare NAME --root DIR``: check a dataset folder before training on it.

1. The layout (:data:`~captioning.data.layouts.LAYOUTS`): every missing file is named with where to get it.
2. The annotations: read as the data module reads them (malformed files fail here, with file and position; empty
   captions are counted).
3. The vocabulary: from the train split only (default), or from every split (``vocab_from="all"``, the older
   convention of Karpathy's preprocessing, which lets val/test words into the vocabulary).
4. Every image: read, checksummed (SHA-256) and decoded under the bad-data policy of
   :mod:`captioning.data.images`, on ``workers`` processes with a progress bar.

Writes to ``out``: ``vocab.json``; ``manifest.json`` (per split: images, captions, unreadable images and one
checksum over the split's image checksums; each annotation file's checksum); ``images.sha256`` (``sha256sum -c``
format, paths relative to the root); ``bad_images.tsv`` (path, split, problem: the report of unreadable images,
which training would skip with a warning); optionally the image cache (``image_cache/``).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captioning.data.cache import CACHE_FOLDER, ImageCache, identity
from captioning.data.images import load_image
from captioning.data.layouts import LAYOUTS, SPLITS, Layout, read_records
from captioning.data.records import CaptionRecord, DataWarning
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary


@dataclass(frozen=True)
class ImageCheck:
    """What reading one image file found: its checksum and mode, or the problem."""

    sha256: str | None
    mode: str | None
    problem: str | None


def check_image(path: Path) -> ImageCheck:
    """Checksums and decodes one file under the data module's policy."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ImageCheck(None, None, f"{path}: image file not found")
    except OSError as e:
        return ImageCheck(None, None, f"{path}: cannot read file ({e})")
    digest = hashlib.sha256(data).hexdigest()
    try:
        load_image(path)
    except CaptioningError as e:
        return ImageCheck(digest, None, str(e))
    with Image.open(io.BytesIO(data)) as image:
        return ImageCheck(digest, image.mode, None)


class _Checks(Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, ImageCheck]:
        return index, check_image(self.paths[index])


@dataclass
class PrepareReport:
    """What ``prepare`` found and wrote."""

    records: list[CaptionRecord]
    vocabulary: Vocabulary
    checks: dict[Path, ImageCheck]
    annotation_warnings: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    @property
    def unreadable(self) -> dict[Path, str]:
        return {p: c.problem for p, c in self.checks.items() if c.problem is not None}

    def summary(self, name: str, root: Path) -> str:
        counts = Counter(r.split for r in self.records)
        captions: Counter[str] = Counter()
        for r in self.records:
            captions[r.split] += len(r.captions)
        modes = Counter(c.mode for c in self.checks.values() if c.mode not in (None, "RGB"))
        lines = [
            f"{name} at {root}: "
            + ", ".join(f"{s} {counts[s]} images ({captions[s]} captions)" for s in SPLITS if counts[s]),
            f"vocabulary: {len(self.vocabulary)} words",
            f"images: {len(self.checks)} checked, {len(self.unreadable)} unreadable"
            + (f", converted to RGB: {', '.join(f'{m} {n}' for m, n in sorted(modes.items()))}" if modes else ""),
            *(f"annotations: {w}" for w in self.annotation_warnings),
            *(f"unreadable: {problem}" for problem in list(self.unreadable.values())[:10]),
            *([f"... and {len(self.unreadable) - 10} more"] if len(self.unreadable) > 10 else []),
            "wrote " + ", ".join(str(p) for p in self.written),
        ]
        return "\n".join(lines)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def check_layout(name: str, root: Path) -> Layout:
    """The named layout, or a :class:`CaptioningError` listing every missing file and where to get it."""
    if name not in LAYOUTS:
        raise CaptioningError(f"unknown dataset {name!r}; one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[name]
    if not root.is_dir():
        raise CaptioningError(f"{root}: dataset folder not found")
    missing = layout.missing(root)
    if missing:
        raise CaptioningError(
            f"{root}: the {name} layout is incomplete; fetch these (data/README.md, data/download_coco.sh):\n"
            + "\n".join(missing)
        )
    return layout


def prepare_dataset(
    name: str,
    root: str | Path,
    *,
    out: str | Path | None = None,
    vocab_from: Literal["train", "all"] = "train",
    min_count: int = 5,
    merge_restval: bool = True,
    workers: int = 2,
    cache_size: int | None = None,
) -> PrepareReport:
    """Checks and describes a dataset folder (see the module docstring); writes into ``out`` (default ``root``)."""
    root = Path(root)
    out = Path(out) if out is not None else root
    layout = check_layout(name, root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        records = read_records(
            root,
            annotations=layout.annotations,
            annotation_file=layout.annotation_file,
            image_dir=layout.image_dir,
            coco_splits=layout.coco_splits,
            merge_restval=merge_restval,
        )
    notes = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    counted = records if vocab_from == "all" else [r for r in records if r.split == "train"]
    if not counted:
        raise CaptioningError(
            f"{root}: no {'captioned' if vocab_from == 'all' else 'train'} images to build a vocabulary from"
        )
    vocabulary = Vocabulary.build((c for r in counted for c in r.captions), min_count=min_count, counted=vocab_from)

    paths = sorted({r.path for r in records})
    # batches of 64 checks: one transfer per batch from a worker process, not one per image
    loader = DataLoader(_Checks(paths), batch_size=64, num_workers=workers, collate_fn=identity)
    checks = dict.fromkeys(paths)
    items = (item for batch in loader for item in batch)
    for index, check in tqdm(items, total=len(paths), desc="checking images", unit="img"):
        checks[paths[index]] = check
    report = PrepareReport(records, vocabulary, checks, notes)

    out.mkdir(parents=True, exist_ok=True)
    vocabulary.save(out / "vocab.json")
    sums = [f"{c.sha256}  {_relative(p, root)}" for p, c in checks.items() if c.sha256 is not None]
    (out / "images.sha256").write_text("".join(line + "\n" for line in sums))
    splits = {r.split: [] for r in records}
    for r in records:
        splits[r.split].append(r)
    # an image can be in two splits (official COCO: val2014 serves as val and test)
    paths_in = {split: {r.path for r in rs} for split, rs in splits.items()}
    in_splits = {p: ",".join(s for s in SPLITS if p in paths_in.get(s, ())) for p in report.unreadable}
    bad = [
        "path\tsplit\tproblem",
        *(f"{_relative(p, root)}\t{in_splits[p]}\t{msg}" for p, msg in report.unreadable.items()),
    ]
    (out / "bad_images.tsv").write_text("\n".join(bad) + "\n")
    annotation_files = sorted({p for p in _annotation_files(layout, root) if p.is_file()})
    manifest = {
        "dataset": name,
        "root": str(root.resolve()),
        "vocabulary": {"from": vocab_from, "min_count": min_count, "words": len(vocabulary)},
        "annotation_files": {_relative(p, root): _sha256(p) for p in annotation_files},
        "splits": {
            split: {
                "images": len(rs),
                "captions": sum(len(r.captions) for r in rs),
                "unreadable": sum(checks[r.path].problem is not None for r in rs),
                # one checksum over the split's files: sha256 of the sorted "sha256  path" lines
                "sha256": hashlib.sha256(
                    "".join(sorted(f"{checks[r.path].sha256}  {_relative(r.path, root)}\n" for r in rs)).encode()
                ).hexdigest(),
            }
            for split, rs in sorted(splits.items())
        },
        "annotation_warnings": notes,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    report.written = [out / n for n in ("vocab.json", "manifest.json", "images.sha256", "bad_images.tsv")]
    if cache_size is not None:
        ImageCache.build(paths, out / CACHE_FOLDER, image_size=cache_size, workers=workers)
        report.written.append(out / CACHE_FOLDER)
    return report


def _annotation_files(layout: Layout, root: Path) -> list[Path]:
    if layout.annotations == "coco":
        return [root / files[0] for files in (layout.coco_splits or {}).values()]
    if layout.annotations == "custom":
        return [root / n for n in ("captions.csv", "captions.jsonl")]
    return [root / (layout.annotation_file or "")]
