"""``captioning extract``: runs the frozen part of a model's encoder once over every image of its splits and stores
what the decoder attention reads (:meth:`Captioner.features`) in a feature folder (:mod:`captioning.data.features`).

Training, validation, ``evaluate`` and ``ablate`` then read the folder with ``--data.features DIR`` and skip the
frozen CNN. Extraction shows a progress bar per split, runs as several shards at once (processes or GPUs, each
``--shard K --shards N``), and resumes an interrupted shard at the first batch it had not recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captioning.data.cache import ImageCache, identity
from captioning.data.dataset import read_pixels
from captioning.data.features import DTYPE, FeatureWriter
from captioning.data.images import normalize_image
from captioning.data.records import CaptionRecord
from captioning.errors import CaptioningError
from captioning.module import CaptioningModule


class _Pixels(Dataset):
    """(row, pixels (3, S, S) uint8 or None, problem or None) for the rows of one shard still to be written."""

    def __init__(
        self, records: Sequence[CaptionRecord], rows: range, image_size: int, cache: ImageCache | None
    ) -> None:
        self.records, self.rows, self.image_size, self.cache = records, rows, image_size, cache

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        row = self.rows[index]
        try:  # numpy: a loader worker sends it with the batch, a tensor through a shared-memory segment of its own
            return row, read_pixels(self.records[row], self.image_size, self.cache).numpy(), None
        except CaptioningError as e:
            return row, None, str(e)


def extract_features(
    module: CaptioningModule,
    splits: Mapping[str, Sequence[CaptionRecord]],
    out: str | Path,
    *,
    image_cache: ImageCache | None = None,
    shard: int = 0,
    shards: int = 1,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, int]:
    """Writes shard ``shard`` of ``shards`` of the features of every split into ``out``; returns the rows written
    now per split (0 for a split this shard had finished before). Unreadable images are recorded and skipped."""
    module = module.to(device).eval()
    captioner, image_size = module.captioner, module.hparams.image_size
    writer = FeatureWriter(out, module.feature_identity(), shard=shard, shards=shards)
    written: dict[str, int] = {}
    for split, records in splits.items():
        rows, done, arrays = writer.open_split(split, [r.image_id for r in records])
        todo = rows[done:]
        written[split] = len(todo)
        if not todo:
            continue
        loader = DataLoader(
            _Pixels(records, todo, image_size, image_cache),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=identity,
        )
        label = f"extract {split}" + (f" (shard {shard}/{shards})" if shards > 1 else "")
        with tqdm(total=len(rows), initial=done, desc=label, unit="img") as bar:
            for batch in loader:
                good = [(row, pixels) for row, pixels, _ in batch if pixels is not None]
                if good:
                    pixels = torch.from_numpy(np.stack([pixels for _, pixels in good]))  # (b, 3, S, S) uint8
                    images = normalize_image(pixels).to(device)  # (b, 3, S, S)
                    with torch.inference_mode():
                        maps = captioner.features(images)  # {name: (b, C, h, w)}
                    index = np.array([row for row, _ in good])
                    for name, value in maps.items():
                        arrays[name][index] = value.float().cpu().numpy().astype(DTYPE)
                bad = {row: problem for row, pixels, problem in batch if pixels is None}
                writer.record(split, arrays, batch[-1][0] + 1 - rows.start, bad)
                bar.update(len(batch))
    return written
