"""Named dataset layouts: which files a dataset folder holds, where each comes from, and how to read its records.

One place for this knowledge: ``captioning prepare NAME`` checks a folder against :data:`LAYOUTS`, the configs in
``configs/`` carry the same data-module settings (a test holds them equal), and :func:`read_records` is what the
data module reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from captioning.data.coco import read_coco_captions, read_karpathy
from captioning.data.custom import CAPTION_FILES, find_captions_file, read_custom
from captioning.data.records import CaptionRecord
from captioning.errors import CaptioningError

Annotations = Literal["coco", "karpathy", "custom"]
SPLITS = ("train", "val", "test")

KARPATHY_ZIP = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
COCO_ZIPS = "http://images.cocodataset.org/zips/{}.zip"
COCO_ANNOTATIONS = "http://images.cocodataset.org/annotations/annotations_trainval{}.zip"
FLICKR8K = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip"
FLICKR30K = "https://shannon.cs.illinois.edu/DenotationGraph/ (request form; flickr30k-images.tar.gz)"


@dataclass(frozen=True)
class Layout:
    """A dataset's files and the data-module settings that read them.

    Attributes:
        annotations: the data module's ``annotations`` layout.
        annotation_file: Karpathy split file or custom captions file (None: the layout's default).
        image_dir: image folder inside the root.
        coco_splits: ``coco`` layout: split -> (captions file, image folder).
        required: (path inside the root, where to get it); a trailing ``/`` marks a folder.
    """

    annotations: Annotations
    annotation_file: str | None = None
    image_dir: str = "."
    coco_splits: dict[str, tuple[str, str]] | None = None
    required: tuple[tuple[str, str], ...] = field(default=())

    def data_settings(self) -> dict:
        """The settings a ``data:`` section of a config holds for this layout."""
        settings: dict = {"annotations": self.annotations, "image_dir": self.image_dir}
        if self.annotation_file:
            settings["annotation_file"] = self.annotation_file
        if self.coco_splits:
            settings["coco_splits"] = {s: list(files) for s, files in self.coco_splits.items()}
        return settings

    def missing(self, root: Path) -> list[str]:
        """One line per required file or folder that ``root`` lacks, saying where to get it."""
        if self.annotations == "custom":
            try:
                find_captions_file(root, self.annotation_file)
            except CaptioningError:
                return [f"  {' or '.join(CAPTION_FILES)}: rows of file,caption[,split] (see data/README.md)"]
            return []
        lines = []
        for path, source in self.required:
            present = (root / path).is_dir() if path.endswith("/") else (root / path).is_file()
            if not present:
                lines.append(f"  {path}  <- {source}")
        return lines


def _official_coco(year: int) -> Layout:
    train, val = f"train{year}", f"val{year}"
    files = {s: (f"annotations/captions_{s}{year}.json", f"{s}{year}") for s in ("train", "val")}
    return Layout(
        "coco",
        # COCO has no captioned test images: evaluate on val (or on the Karpathy test split with layout ``coco``)
        coco_splits={"train": files["train"], "val": files["val"], "test": files["val"]},
        required=(
            (f"annotations/captions_{train}.json", COCO_ANNOTATIONS.format(year)),
            (f"annotations/captions_{val}.json", COCO_ANNOTATIONS.format(year)),
            (f"{train}/", COCO_ZIPS.format(train)),
            (f"{val}/", COCO_ZIPS.format(val)),
        ),
    )


LAYOUTS: dict[str, Layout] = {
    "coco": Layout(
        "karpathy",
        "dataset_coco.json",
        ".",
        required=(
            ("dataset_coco.json", KARPATHY_ZIP),
            ("train2014/", COCO_ZIPS.format("train2014")),
            ("val2014/", COCO_ZIPS.format("val2014")),
        ),
    ),
    "coco2014": _official_coco(2014),
    "coco2017": _official_coco(2017),
    "flickr8k": Layout(
        "karpathy",
        "dataset_flickr8k.json",
        "Flicker8k_Dataset",  # sic: the folder name inside the official zip
        required=(("dataset_flickr8k.json", KARPATHY_ZIP), ("Flicker8k_Dataset/", FLICKR8K)),
    ),
    "flickr30k": Layout(
        "karpathy",
        "dataset_flickr30k.json",
        "flickr30k-images",
        required=(("dataset_flickr30k.json", KARPATHY_ZIP), ("flickr30k-images/", FLICKR30K)),
    ),
    "custom": Layout("custom"),
}


def read_records(
    root: str | Path,
    *,
    annotations: Annotations,
    annotation_file: str | None = None,
    image_dir: str = "images",
    coco_splits: dict[str, tuple[str, str]] | None = None,
    merge_restval: bool = True,
) -> list[CaptionRecord]:
    """Every record of a dataset folder, all splits (the data module's arguments; see its docstring)."""
    root = Path(root)
    if annotations == "custom":
        return read_custom(root, captions_file=annotation_file)
    if annotations == "karpathy":
        file = root / (annotation_file or "dataset_shapes.json")
        return read_karpathy(file, root / image_dir, merge_restval=merge_restval)
    files = coco_splits or {s: (f"captions_{s}.json", image_dir) for s in SPLITS}
    records = []
    for split, (captions_name, images) in files.items():
        captions = root / captions_name
        instances = captions.with_name(captions.name.replace("captions_", "instances_", 1))
        has_boxes = instances != captions and instances.is_file()
        records += read_coco_captions(
            captions, root / images, split=split, instances_file=instances if has_boxes else None
        )
    return records
