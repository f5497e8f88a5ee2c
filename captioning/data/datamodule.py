"""CaptionDataModule: owns the vocabulary, the split datasets, collation and the loaders."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from captioning.data.coco import read_coco_captions, read_karpathy
from captioning.data.dataset import CaptionDataset, collate
from captioning.data.records import CaptionRecord
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

Split = Literal["train", "val", "test"]


class CaptionDataModule(pl.LightningDataModule):
    """Captioned images from a dataset folder.

    Layouts (``annotations``):
        ``coco``: ``root/captions_{split}.json`` in the official COCO captions format, with optional
        ``root/instances_{split}.json`` for object boxes; image ``file_name`` relative to ``root/image_dir``.
        This is what ``captioning prepare shapes`` writes.
        ``karpathy``: one Karpathy split file ``root/karpathy_file``; images at ``root/image_dir/filepath/filename``.

    The vocabulary is built here, in ``__init__``, from the train split only (or loaded from ``vocabulary``), so
    its size is known before the model is built (LightningCLI links it into the model).

    Args:
        root: dataset folder.
        annotations: file layout, see above.
        karpathy_file: the Karpathy split file name inside ``root`` (``karpathy`` layout).
        image_dir: image folder inside ``root``.
        image_size: images are resized to this square side.
        batch_size: images (or pairs) per batch, per process.
        num_workers: loader worker processes.
        train_sampling: ``random_reference`` (random captions per image per epoch) or ``all_pairs``.
        references_per_image: with ``random_reference``, captions decoded per encoded training image.
        min_count: words seen fewer times in the train captions become ``<unk>``.
        max_len: captions are clipped to this many words.
        vocabulary: a saved vocabulary (JSON file or word list, e.g. a checkpoint's) instead of building one.
    """

    def __init__(
        self,
        root: str = "data/shapes",
        *,
        annotations: Literal["coco", "karpathy"] = "coco",
        karpathy_file: str = "dataset_shapes.json",
        image_dir: str = "images",
        image_size: int = 96,
        batch_size: int = 64,
        num_workers: int = 2,
        train_sampling: Literal["random_reference", "all_pairs"] = "random_reference",
        references_per_image: int = 1,
        min_count: int = 1,
        max_len: int = 16,
        vocabulary: str | list[str] | None = None,
    ) -> None:
        super().__init__()
        # Settings are plain attributes, not saved hyperparameters: Lightning refuses a checkpoint whose module and
        # data module share a hyperparameter name (max_len, image_size) with different meanings or values.
        self.root = Path(root)
        self.annotations, self.karpathy_file, self.image_dir = annotations, karpathy_file, image_dir
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.train_sampling, self.references_per_image, self.max_len = train_sampling, references_per_image, max_len
        if not self.root.is_dir():
            raise CaptioningError(f"{self.root}: dataset folder not found (for shapes: captioning prepare shapes)")
        if isinstance(vocabulary, list):
            self.vocab = Vocabulary(vocabulary)
        else:
            self.vocab = Vocabulary.load(vocabulary) if vocabulary else self._build_vocabulary(min_count)
        self.datasets: dict[str, CaptionDataset] = {}

    @functools.cache  # noqa: B019 - one read per split and module; the module lives as long as the run
    def records(self, split: Split) -> list[CaptionRecord]:
        """The records of one split."""
        images = self.root / self.image_dir
        if self.annotations == "karpathy":
            records = [r for r in read_karpathy(self.root / self.karpathy_file, images) if r.split == split]
        else:
            instances = self.root / f"instances_{split}.json"
            records = read_coco_captions(
                self.root / f"captions_{split}.json",
                images,
                split=split,
                instances_file=instances if instances.is_file() else None,
            )
        if not records:
            raise CaptioningError(f"{self.root}: the {split} split has no captioned images")
        return records

    def _build_vocabulary(self, min_count: int) -> Vocabulary:
        return Vocabulary.build((c for r in self.records("train") for c in r.captions), min_count=min_count)

    @property
    def vocabulary_words(self) -> list[str]:
        """The vocabulary as a word list (linked into the model, so checkpoints carry it)."""
        return self.vocab.words

    def dataset(self, split: Split) -> CaptionDataset:
        if split not in self.datasets:
            sampling = self.train_sampling if split == "train" else "images"
            self.datasets[split] = CaptionDataset(
                self.records(split),
                self.vocab,
                image_size=self.image_size,
                max_len=self.max_len,
                sampling=sampling,
                references_per_image=self.references_per_image,
            )
        return self.datasets[split]

    def _loader(self, split: Split, *, shuffle: bool) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=functools.partial(collate, pad=self.vocab.pad),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
