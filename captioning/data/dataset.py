"""torch Dataset over caption records: image decoding, transforms, caption encoding, collation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from captioning.data.records import CaptionRecord
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

# torchvision's ImageNet statistics: the encoder's pretrained weights expect them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Sampling = Literal["random_reference", "all_pairs", "images"]


def image_transform(image_size: int) -> v2.Compose:
    """PIL RGB image -> normalized float tensor (3, image_size, image_size)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((image_size, image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def load_image(path: str | Path) -> Image.Image:
    """Opens an image as RGB, or raises a one-line :class:`CaptioningError` naming the file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as e:
        raise CaptioningError(f"{path}: image file not found") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise CaptioningError(f"{path}: cannot read image ({e})") from e


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
    ) -> None:
        if references_per_image < 1:
            raise ValueError(f"references_per_image must be >= 1, got {references_per_image}")
        self.records = list(records)
        self.vocab = vocab
        self.max_len = max_len
        self.sampling = sampling
        self.references_per_image = references_per_image if sampling == "random_reference" else 1
        self.transform = image_transform(image_size)
        if sampling == "all_pairs":
            self.items = [(i, k) for i, r in enumerate(self.records) for k in range(len(r.captions))]
        else:
            self.items = [(i, 0) for i in range(len(self.records))]
        # (record, caption) -> token ids (T,), filled on first use: nltk's Treebank tokenizer costs about a third of
        # a shapes batch's loading time, and a caption's ids never change. Each DataLoader worker fills its own.
        self._token_ids: dict[tuple[int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        record_index, caption_index = self.items[index]
        record = self.records[record_index]
        chosen = [caption_index]
        if self.sampling == "random_reference":
            # torch's generator: Lightning seeds it per worker, so runs are reproducible.
            n, k = len(record.captions), self.references_per_image
            chosen = torch.randperm(n)[:k].tolist() if n >= k else torch.randint(n, (k,)).tolist()
        return {
            "image": self.transform(load_image(record.path)),  # (3, H, W)
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


@dataclass
class Batch:
    """A collated batch. ``tokens`` = [<bos>, words, <eos>, <pad>...], R captions per image, image-major."""

    images: torch.Tensor  # (B, 3, H, W)
    tokens: torch.Tensor  # (B*R, T + 1)
    lengths: torch.Tensor  # (B*R,) number of non-pad tokens, <bos> and <eos> included
    image_ids: list[int]
    references: list[list[str]]


def collate(items: list[dict], *, pad: int = 0) -> Batch:
    captions = [caption for item in items for caption in item["tokens"]]  # image-major
    lengths = torch.tensor([len(caption) for caption in captions])
    tokens = torch.full((len(captions), int(lengths.max())), pad, dtype=torch.long)
    for row, caption in enumerate(captions):
        tokens[row, : len(caption)] = caption
    return Batch(
        images=torch.stack([item["image"] for item in items]),
        tokens=tokens,
        lengths=lengths,
        image_ids=[item["image_id"] for item in items],
        references=[item["references"] for item in items],
    )
