"""CaptionDataModule: owns the vocabulary, the split datasets, collation and the loaders."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from captioning.data.cache import CACHE_FOLDER, ImageCache
from captioning.data.dataset import CaptionDataset, collate
from captioning.data.features import FeatureStore
from captioning.data.layouts import Annotations, read_records
from captioning.data.records import CaptionRecord
from captioning.data.sampler import DrawSampler
from captioning.errors import CaptioningError, ConfigError
from captioning.vocab import Vocabulary

Split = Literal["train", "val", "test"]


class CaptionDataModule(pl.LightningDataModule):
    """Captioned images from a dataset folder.

    Layouts (``annotations``):
        ``coco``: official COCO caption files, one per split. By default ``root/captions_{split}.json`` with image
        ``file_name`` relative to ``root/image_dir`` (what ``captioning prepare shapes`` writes); ``coco_splits``
        names other files, e.g. the official 2014 ones. An ``instances_*.json`` next to a ``captions_*.json`` adds
        object boxes.
        ``karpathy``: one Karpathy split file ``root/annotation_file``; images at
        ``root/image_dir/filepath/filename`` (COCO, Flickr8k/30k).
        ``custom``: a folder of images with ``captions.csv`` or ``captions.jsonl`` (``annotation_file`` picks one);
        see :mod:`captioning.data.custom`.

    The vocabulary is built here, in ``__init__``, from the train split only (or loaded from ``vocabulary``), so
    its size is known before the model is built (LightningCLI links it into the model).

    Args:
        root: dataset folder.
        annotations: file layout, see above.
        annotation_file: the Karpathy split file (``karpathy``) or captions file (``custom``) inside ``root``.
        image_dir: image folder inside ``root``.
        coco_splits: ``coco`` layout: split -> (captions file, image folder), both relative to ``root``.
        merge_restval: ``karpathy`` layout: train on ``restval`` too (the usual 113,287 COCO train images).
        image_size: images are resized to this square side.
        batch_size: images (or pairs) per batch, per process.
        num_workers: loader worker processes.
        train_sampling: ``random_reference`` (random captions per image per epoch) or ``all_pairs``.
        references_per_image: with ``random_reference``, captions decoded per encoded training image.
        min_count: words seen fewer times in the train captions become ``<unk>``.
        max_len: captions are clipped to this many words.
        vocabulary: a saved vocabulary (JSON file or word list, e.g. a checkpoint's) instead of building one.
        image_cache: a folder with a preprocessed image cache (``captioning prepare ... --cache``); ``auto`` uses
            ``root/image_cache`` when it holds one at ``image_size``; ``none`` always decodes the image files.
        features: a folder of pre-extracted CNN maps (``captioning extract``) that training, validation and test
            read instead of the images, skipping the frozen CNN; the model refuses features made for another
            encoder, weights, input size or attention (:meth:`CaptioningModule.feature_identity`).
    """

    def __init__(
        self,
        root: str = "data/shapes",
        *,
        annotations: Annotations = "coco",
        annotation_file: str | None = None,
        image_dir: str = "images",
        coco_splits: dict[str, tuple[str, str]] | None = None,
        merge_restval: bool = True,
        image_size: int = 96,
        batch_size: int = 64,
        num_workers: int = 2,
        train_sampling: Literal["random_reference", "all_pairs"] = "random_reference",
        references_per_image: int = 1,
        min_count: int = 1,
        max_len: int = 16,
        vocabulary: str | list[str] | None = None,
        image_cache: str = "auto",
        features: str | None = None,
    ) -> None:
        super().__init__()
        # Settings are plain attributes, not saved hyperparameters: Lightning refuses a checkpoint whose module and
        # data module share a hyperparameter name (max_len, image_size) with different meanings or values.
        self.root = Path(root)
        self.annotations, self.annotation_file, self.image_dir = annotations, annotation_file, image_dir
        self.coco_splits, self.merge_restval = coco_splits, merge_restval
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.train_sampling, self.references_per_image, self.max_len = train_sampling, references_per_image, max_len
        if not self.root.is_dir():
            raise CaptioningError(f"{self.root}: dataset folder not found (for shapes: captioning prepare shapes)")
        if isinstance(vocabulary, list):
            self.vocab = Vocabulary(vocabulary)
        else:
            self.vocab = Vocabulary.load(vocabulary) if vocabulary else self._build_vocabulary(min_count)
        self.feature_store = FeatureStore(features) if features else None
        if self.feature_store is not None and self.feature_store.image_size != image_size:
            raise ConfigError(
                f"{features}: features of {self.feature_store.image_size} px images; data.image_size is {image_size}"
            )
        self.image_cache = self._open_cache(image_cache) if self.feature_store is None else None
        self.datasets: dict[str, CaptionDataset] = {}

    def _open_cache(self, setting: str) -> ImageCache | None:
        if setting == "none":
            return None
        if setting == "auto":
            folder = self.root / CACHE_FOLDER
            return ImageCache(folder, self.image_size) if ImageCache.exists(folder, self.image_size) else None
        return ImageCache(setting, self.image_size)

    @functools.cache  # noqa: B019 - one read per module; the module lives as long as the run
    def all_records(self) -> list[CaptionRecord]:
        """The records of every split (see :func:`captioning.data.layouts.read_records`)."""
        return read_records(
            self.root,
            annotations=self.annotations,
            annotation_file=self.annotation_file,
            image_dir=self.image_dir,
            coco_splits=self.coco_splits,
            merge_restval=self.merge_restval,
        )

    @functools.cache  # noqa: B019 - one list per split
    def records(self, split: Split) -> list[CaptionRecord]:
        """The records of one split."""
        records = [r for r in self.all_records() if r.split == split]
        if not records:
            raise CaptioningError(f"{self.root}: the {split} split has no captioned images")
        return records

    def _build_vocabulary(self, min_count: int) -> Vocabulary:
        return Vocabulary.build(
            (c for r in self.records("train") for c in r.captions), min_count=min_count, counted="train"
        )

    @property
    def vocabulary_words(self) -> list[str]:
        """The vocabulary as a word list (linked into the model, so checkpoints carry it)."""
        return self.vocab.words

    @property
    def vocabulary_rule(self) -> dict[str, str | int] | None:
        """How the vocabulary's words were chosen (``counted`` splits, ``min_count``), None where unknown (a word
        list); linked into the model, so that checkpoints and ``scores.json`` record it."""
        return self.vocab.rule

    @property
    def seed(self) -> int:
        """The run's seed, as ``seed_everything`` (``--seed_everything``) set it; 0 without one."""
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

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
                image_cache=self.image_cache,
                features=self.feature_store.split(split) if self.feature_store is not None else None,
                seed=self.seed,
            )
        return self.datasets[split]

    def _loader(self, split: Split) -> DataLoader:
        workers = self.num_workers
        settings = {
            "batch_size": self.batch_size,
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "collate_fn": functools.partial(collate, pad=self.vocab.pad),
        }
        if split != "train":
            return DataLoader(self.dataset(split), shuffle=False, **settings)
        # Training: draws that depend on (seed, epoch, index) only (DrawSampler), through torchdata's
        # StatefulDataLoader, whose position Lightning saves in every checkpoint: a run resumed from a mid-epoch
        # last.ckpt continues at the next batch, with the same draws.
        trainer = getattr(self, "trainer", None)  # None outside a Trainer (a loader built by hand)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = DrawSampler(self.dataset(split), seed=self.seed, num_replicas=world, rank=rank)
        sampler.set_epoch(trainer.current_epoch if trainer is not None else 0)  # a resumed run's restored epoch
        # Its own generator: starting an epoch's iterator draws a base seed, and from the global RNG that draw would
        # shift the dropout masks of a run resumed from an end-of-epoch checkpoint.
        generator = torch.Generator().manual_seed(self.seed)
        return StatefulDataLoader(self.dataset(split), sampler=sampler, generator=generator, **settings)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
