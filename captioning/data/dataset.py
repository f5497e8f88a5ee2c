"""torch Dataset over caption records: image decoding (or the image cache), caption encoding, collation.

Bad images met here (missing, unreadable; see :mod:`captioning.data.images`) are skipped, not fatal: the item comes
back as ``None`` with a :class:`DataWarning` naming the file, :func:`collate` leaves it out of the batch and counts it
in ``Batch.skipped``, and the module logs the count (``train/skipped_images``). ``captioning prepare`` lists such
files before a run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from captioning.data.cache import ImageCache
from captioning.data.features import FeatureSplit
from captioning.data.images import load_resized, normalize_image, resize_image
from captioning.data.records import CaptionRecord, DataWarning
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

Sampling = Literal["random_reference", "all_pairs", "images"]


def image_transform(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalized float tensor (3, image_size, image_size), as the cache's rows are normalized."""
    return lambda image: normalize_image(resize_image(image, image_size))


class CaptionDataset(Dataset):
    """Images with their captions.

    Args:
        records: the split's records.
        vocab: encodes captions into token ids.
        image_size: square side the images are resized to.
        max_len: captions are clipped to this many words.
        sampling: ``random_reference``: one item per image with ``references_per_image`` of its captions drawn
            at random each time; ``all_pairs``: one item per (image, caption); ``images``: one item per image with
            its first caption as target (validation / test).
        references_per_image: captions drawn per image and item with ``random_reference``: the image is encoded
            once and decoded against each (the ``seq_per_img`` of common captioning code), which gives the CNN
            several captions' gradient for one forward pass. Drawn without replacement when the image has enough.
        image_cache: preprocessed images at ``image_size`` (files not in it are decoded as usual).
        features: pre-extracted CNN maps of the split (``captioning extract``): items carry them, {name: (C, h, w)},
            instead of the image.
        seed: seeds the ``random_reference`` draws, together with the draw id (see ``__getitem__``).
    """

    def __init__(
        self,
        records: Sequence[CaptionRecord],
        vocab: Vocabulary,
        *,
        image_size: int,
        max_len: int,
        sampling: Sampling,
        references_per_image: int = 1,
        image_cache: ImageCache | None = None,
        features: FeatureSplit | None = None,
        seed: int = 0,
    ) -> None:
        if references_per_image < 1:
            raise ValueError(f"references_per_image must be >= 1, got {references_per_image}")
        self.records = list(records)
        self.vocab = vocab
        self.max_len = max_len
        self.sampling = sampling
        self.references_per_image = references_per_image if sampling == "random_reference" else 1
        self.image_size = image_size
        if image_cache is not None and image_cache.image_size != image_size:
            raise ValueError(
                f"the image cache holds {image_cache.image_size} px images, the dataset wants {image_size}"
            )
        self.image_cache = image_cache
        self.features = features
        if features is not None and (missing := features.missing([r.image_id for r in self.records])):
            raise CaptioningError(
                f"{features.folder}: {len(missing)} of the split's {len(self.records)} images have no features "
                f"(image id {missing[0]}, ...): extract them again for this dataset"
            )
        self.seed = seed
        if sampling == "all_pairs":
            self.items = [(i, k) for i, r in enumerate(self.records) for k in range(len(r.captions))]
        else:
            self.items = [(i, 0) for i in range(len(self.records))]
        # (record, caption) -> token ids (T,), filled on first use: nltk's Treebank tokenizer costs about a third of
        # a shapes batch's loading time, and a caption's ids never change. Each DataLoader worker fills its own.
        self._token_ids: dict[tuple[int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.items)

    def pixels(self, record: CaptionRecord) -> torch.Tensor:
        """The record's image as (3, S, S) uint8, from the cache when it holds the file; raises CaptioningError."""
        return read_pixels(record, self.image_size, self.image_cache)

    def __getitem__(self, draw: int) -> dict | None:
        """``draw``: an item index, or a draw id ``epoch * len(self) + index`` from
        :class:`~captioning.data.sampler.DrawSampler`. The ``random_reference`` choice is a function of (seed, draw
        id): the same whatever process draws it and whenever, and different in each epoch."""
        record_index, caption_index = self.items[draw % len(self.items)]
        record = self.records[record_index]
        if self.features is not None:
            image = self.features.row(record.image_id)  # {name: (C, h, w)}; None (with a warning) if unreadable
            if image is None:
                return None
        else:
            try:
                image = normalize_image(self.pixels(record))  # (3, H, W)
            except CaptioningError as e:
                warnings.warn(f"skipped: {e}", DataWarning, stacklevel=2)
                return None
        chosen = [caption_index]
        if self.sampling == "random_reference":
            # (seed, draw id) -> one 64-bit seed; numpy's SeedSequence mixes any sizes of both without overflow
            mixed = np.random.SeedSequence([self.seed, draw]).generate_state(1, np.uint64)[0]
            g = torch.Generator().manual_seed(int(mixed))
            n, k = len(record.captions), self.references_per_image
            chosen = (
                torch.randperm(n, generator=g)[:k].tolist() if n >= k else torch.randint(n, (k,), generator=g).tolist()
            )
        return {
            "image": image,
            "tokens": [self._tokens(record_index, i) for i in chosen],
            "image_id": record.image_id,
            "references": list(record.captions),
        }

    def _tokens(self, record_index: int, caption_index: int) -> torch.Tensor:
        """Token ids of one caption, [<bos>, words, <eos>]: (T,). Encoded once, then reused (collate copies them)."""
        key = (record_index, caption_index)
        if key not in self._token_ids:
            text = self.records[record_index].captions[caption_index]
            self._token_ids[key] = torch.tensor(self.vocab.encode(text, max_len=self.max_len))
        return self._token_ids[key]


def read_pixels(record: CaptionRecord, image_size: int, cache: ImageCache | None) -> torch.Tensor:
    """The record's image as (3, S, S) uint8, from the cache when it holds the file; raises CaptioningError."""
    cached = cache.lookup(record.path) if cache is not None else None
    if cached is None:
        return load_resized(record.path, image_size)
    pixels, problem = cached
    if pixels is None:
        raise CaptioningError(f"{problem} (recorded when the image cache was built)")
    return pixels


@dataclass
class Batch:
    """A collated batch. ``tokens`` = [<bos>, words, <eos>, <pad>...], R captions per image, image-major."""

    images: torch.Tensor | dict[str, torch.Tensor]  # (B, 3, H, W), or pre-extracted features {name: (B, C, h, w)}
    tokens: torch.Tensor  # (B*R, T + 1)
    lengths: torch.Tensor  # (B*R,) number of non-pad tokens, <bos> and <eos> included
    image_ids: list[int]
    references: list[list[str]]
    skipped: int = 0  # images of this batch that could not be read (left out of it)


def collate(items: list[dict | None], *, pad: int = 0) -> Batch:
    """Stacks items into a :class:`Batch`, leaving out the ``None`` of unreadable images (counted in ``skipped``)."""
    skipped = sum(item is None for item in items)
    items = [item for item in items if item is not None]
    captions = [caption for item in items for caption in item["tokens"]]  # image-major
    lengths = torch.tensor([len(caption) for caption in captions], dtype=torch.long)
    tokens = torch.full((len(captions), max((len(c) for c in captions), default=0)), pad, dtype=torch.long)
    for row, caption in enumerate(captions):
        tokens[row, : len(caption)] = caption
    if items and isinstance(items[0]["image"], dict):  # pre-extracted features
        images: torch.Tensor | dict[str, torch.Tensor] = {
            name: torch.stack([item["image"][name] for item in items]) for name in items[0]["image"]
        }
    else:
        images = torch.stack([item["image"] for item in items]) if items else torch.empty(0, 3, 0, 0)
    return Batch(
        images=images,
        tokens=tokens,
        lengths=lengths,
        image_ids=[item["image_id"] for item in items],
        references=[item["references"] for item in items],
        skipped=skipped,
    )
