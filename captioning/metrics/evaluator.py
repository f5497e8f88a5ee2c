"""Collects generated captions over a split, across all processes, and scores them once.

Corpus metrics (BLEU, CIDEr-D's IDF) are not averages of per-shard scores, and DistributedSampler pads the last
batches by repeating images, so: every rank gathers all (image id, caption) pairs with
``torch.distributed.all_gather_object`` (Lightning's ``all_gather`` returns lists of strings unchanged), duplicates
are dropped by image id, rank 0 scores the split once, and the scores are broadcast to every rank.
With grounding targets (object boxes), each caption's attention is scored against its image's boxes as it is added,
and the object categories it names are recorded, with or without attention (:mod:`captioning.metrics.grounding`);
those per-image tallies travel and dedupe with the captions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from captioning.metrics.grounding import GroundingTarget, ImageGrounding, ground_caption, summarize
from captioning.metrics.scorers import METRICS, coco_scores
from captioning.metrics.tokenize import Backend


@dataclass(frozen=True)
class EvaluationSpec:
    """What validation and test score.

    Args:
        metrics: pycocoevalcap metrics (by its names: ``Bleu``, ``METEOR``, ``ROUGE_L``, ``CIDEr``, ``SPICE``).
        tokenizer: PTB tokenizer for those metrics: ``java`` (pycocoevalcap's) or ``python`` (the same tokens on
            caption text, no JVM start; METEOR still runs on Java).
    """

    metrics: tuple[str, ...] = METRICS
    tokenizer: Backend = "java"


@dataclass(frozen=True)
class Evaluation:
    """A scored split: what ``evaluate`` writes (``scores.json``, ``per_image.json``, ``results.json``,
    ``grounding.json``), the same on every process."""

    scores: dict[str, float] = field(default_factory=dict)  # corpus metrics by pycocoevalcap's names
    per_image: dict[int, dict[str, float]] = field(default_factory=dict)  # image id -> metric -> score
    results: list[dict] = field(default_factory=list)  # COCO results format, by image id
    grounding: dict[str, float | None] = field(default_factory=dict)  # {} without boxes


class CaptionEvaluator:
    """Accumulates one split's generated captions and scores them over the whole split; :attr:`last` holds the last
    split's :class:`Evaluation`."""

    def __init__(self, metrics: Sequence[str] = METRICS, *, tokenizer: Backend = "java") -> None:
        self.metrics = tuple(metrics)
        self.tokenizer: Backend = tokenizer
        self.targets: Mapping[int, GroundingTarget] = {}
        self.synonyms: Mapping[str, str] = {}
        # Seconds of the last compute(): gathering the shards, merging them by image id, scoring (rank 0), and
        # broadcasting the scores; written to ``timing.json`` by ``evaluate``.
        self.timing: dict[str, float] = {}
        self.last = Evaluation()
        self.reset()

    def reset(self) -> None:
        self.captions: dict[int, str] = {}
        self.references: dict[int, list[str]] = {}
        self.grounding: dict[int, ImageGrounding] = {}

    def ground_on(self, targets: Mapping[int, GroundingTarget], synonyms: Mapping[str, str]) -> None:
        """Scores attention grounding and object naming for the images that have ``targets`` (boxes), naming objects
        by ``synonyms``."""
        self.targets, self.synonyms = targets, synonyms

    def add(
        self,
        image_ids: Sequence[int],
        captions: Sequence[str],
        references: Sequence[Sequence[str]],
        attention: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """One batch: captions, their references, and (for grounding) the attention of each step, (B, T, ...); None or
        empty without spatial attention, when images with targets still get their object naming recorded."""
        for row, (image_id, caption, refs) in enumerate(zip(image_ids, captions, references, strict=True)):
            image_id = int(image_id)
            self.captions[image_id] = caption
            self.references[image_id] = list(refs)
            if image_id in self.targets:
                maps = {name: weights[row] for name, weights in (attention or {}).items()}  # (T, ...)
                self.grounding[image_id] = ground_caption(
                    caption.split(), maps, self.targets[image_id], synonyms=self.synonyms
                )

    def _gather(self) -> None:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        start = time.perf_counter()
        shards: list = [None] * dist.get_world_size()
        dist.all_gather_object(shards, (self.captions, self.references, self.grounding))
        self.timing["gather_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for captions, references, grounding in shards:  # a repeated (padded) image id simply overwrites itself
            self.captions.update(captions)
            self.references.update(references)
            self.grounding.update(grounding)
        self.timing["dedupe_s"] = time.perf_counter() - start

    def compute(self) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        """Scores every collected image once; returns (corpus scores, per-image scores) on every rank."""
        self.timing = {"gather_s": 0.0, "dedupe_s": 0.0}
        self._gather()
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        result: list = [None]
        start = time.perf_counter()
        if not distributed or dist.get_rank() == 0:
            result[0] = coco_scores(self.captions, self.references, metrics=self.metrics, tokenizer=self.tokenizer)
        self.timing["score_s"] = time.perf_counter() - start  # other ranks: the wait for rank 0
        start = time.perf_counter()
        if distributed:
            dist.broadcast_object_list(result, src=0)
        self.timing["broadcast_s"] = time.perf_counter() - start
        self.timing["images"] = len(self.captions)
        return result[0]

    def evaluate(self) -> Evaluation:
        """Scores the collected split (:meth:`compute`), keeps it as :attr:`last` with its results and grounding, and
        starts a new split (:meth:`reset`)."""
        scores, per_image = self.compute()
        # grounding_scores() after compute(), which gathered the per-image tallies: equal on every rank
        self.last = Evaluation(scores, per_image, self.results(), self.grounding_scores())
        self.reset()
        return self.last

    def grounding_scores(self) -> dict[str, float | None]:
        """Corpus grounding and object naming of the collected captions (after :meth:`compute`, which gathers them);
        {} without boxes."""
        return summarize(self.grounding) if self.grounding else {}

    def results(self) -> list[dict]:
        """The COCO results format: one ``{"image_id", "caption"}`` per image, by image id."""
        return [{"image_id": i, "caption": self.captions[i]} for i in sorted(self.captions)]
