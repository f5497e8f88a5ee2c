"""Collects generated captions over a split, across all processes, and scores them once.

Corpus metrics (BLEU, CIDEr-D's IDF) are not averages of per-shard scores, and DistributedSampler pads the last
batches by repeating images, so: every rank gathers all (image id, caption) pairs with
``torch.distributed.all_gather_object`` (Lightning's ``all_gather`` returns lists of strings unchanged), duplicates
are dropped by image id, rank 0 scores the split once, and the scores are broadcast to every rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.distributed as dist

from captioning.metrics.scorers import coco_scores


class CaptionEvaluator:
    """Accumulates one split's generated captions and scores them over the whole split."""

    def __init__(self, metrics: Sequence[str] = ("Bleu", "METEOR", "ROUGE_L", "CIDEr")) -> None:
        self.metrics = tuple(metrics)
        self.reset()

    def reset(self) -> None:
        self.captions: dict[int, str] = {}
        self.references: dict[int, list[str]] = {}

    def add(self, image_ids: Sequence[int], captions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        for image_id, caption, refs in zip(image_ids, captions, references, strict=True):
            self.captions[int(image_id)] = caption
            self.references[int(image_id)] = list(refs)

    def _gather(self) -> None:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        shards: list = [None] * dist.get_world_size()
        dist.all_gather_object(shards, (self.captions, self.references))
        for captions, references in shards:  # a repeated (padded) image id simply overwrites itself
            self.captions.update(captions)
            self.references.update(references)

    def compute(self) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        """Scores every collected image once; returns (corpus scores, per-image scores) on every rank."""
        self._gather()
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        result: list = [None]
        if not distributed or dist.get_rank() == 0:
            result[0] = coco_scores(self.captions, self.references, metrics=self.metrics)
        if distributed:
            dist.broadcast_object_list(result, src=0)
        return result[0]

    def results(self) -> list[dict]:
        """The COCO results format: one ``{"image_id", "caption"}`` per image, by image id."""
        return [{"image_id": i, "caption": self.captions[i]} for i in sorted(self.captions)]
