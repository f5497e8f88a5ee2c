"""Evaluation: a checkpoint's captions of a split, scored with the COCO metrics (and, where the split has boxes,
attention grounding and object naming), written as files."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from PIL import Image

from captioning.checkpoints import load_checkpoint
from captioning.data.datamodule import CaptionDataModule
from captioning.data.records import CaptionRecord
from captioning.data.synonyms import synonyms_for
from captioning.errors import CaptioningError
from captioning.metrics import METRICS, WITH_SPICE
from captioning.metrics.grounding import GroundingTarget
from captioning.module import CaptioningModule
from captioning.viz.report import ReportRow, spread, write_report
from captioning.workflows.files import write_json
from captioning.workflows.inference import caption_images

log = logging.getLogger(__name__)


def evaluate(
    ckpt: str | Path,
    data_root: str | Path,
    split: str,
    out: str | Path,
    *,
    beam_size: int | None = None,
    decoding: dict | None = None,
    devices: int = 1,
    batch_size: int = 64,
    num_workers: int = 0,
    spice: bool = False,
    metrics: Sequence[str] | None = None,
    report: bool = False,
    report_max: int = 1000,
    layout: dict | None = None,
    features: str | Path | None = None,
) -> dict[str, float]:
    """Generates captions for a split, scores them, and writes results.json, scores.json and per_image.json; where the
    split has boxes, also grounding.json (attention grounding and object naming, :mod:`captioning.metrics.grounding`),
    and timing.json (seconds of the test loop, and within it of gathering, merging, scoring, broadcasting).
    ``scores.json`` holds the metrics by name, plus ``decoding`` (beam size, length penalty, minimum and maximum
    length, ...) and ``vocabulary`` (size, counted splits, minimum count) entries; the return value is the metrics.

    The metrics are pycocoevalcap's BLEU-1..4, METEOR, ROUGE-L and CIDEr-D; with ``spice``, SPICE too where it can
    run (else skipped with one line); ``metrics`` names another selection (of ``WITH_SPICE``: a quick CIDEr-D check
    skips METEOR's 5 s JVM start). With ``report``, also
    ``report.html`` (:mod:`captioning.viz.report`) with at most ``report_max`` images. ``layout``: the data
    module's file-layout settings (``annotations``, ``annotation_file``, ``image_dir``, ``coco_splits``,
    ``merge_restval``); by default the ``coco`` layout that ``prepare shapes`` writes. ``features``: a folder of
    pre-extracted features of the checkpoint's frozen CNN (``captioning extract``) to read instead of the images
    (the report still reads the images it shows).
    """
    if split not in ("val", "test"):
        raise CaptioningError(f"--split must be val or test, not {split!r}")
    overrides = {"beam_size": beam_size} if beam_size else {}
    overrides |= {k: v for k, v in (decoding or {}).items() if v is not None}  # min_len, length_penalty, ...
    module = load_checkpoint(ckpt, **overrides)
    # By default every COCO metric, whatever subset the run validated with (a config may trim validation to what
    # checkpoint selection needs).
    module.evaluator.metrics = tuple(metrics) if metrics else WITH_SPICE if spice else METRICS
    data = CaptionDataModule(
        str(data_root),
        image_size=module.hparams.image_size,
        batch_size=batch_size,
        num_workers=num_workers,
        vocabulary=module.vocab.words,
        features=str(features) if features else None,
        **(layout or {}),
    )
    trainer = pl.Trainer(
        accelerator="auto" if devices == 1 else "cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    targets = grounding_targets(data.records(split))
    if targets:
        categories = {box.category for target in targets.values() for box in target.boxes}
        module.evaluator.ground_on(targets, synonyms_for(categories))
    loader = data.val_dataloader() if split == "val" else data.test_dataloader()
    start = time.perf_counter()
    trainer.test(module, dataloaders=loader, verbose=False)  # Lightning moves the module back to the CPU after it
    timing = {"test_s": time.perf_counter() - start, **module.evaluator.timing, "processes": trainer.world_size}
    evaluation = module.evaluator.last
    if trainer.is_global_zero:
        out = Path(out)
        write_json(out / "results.json", evaluation.results)
        # The metrics at the top level, as before; then what they depend on, so that two runs' numbers can be compared.
        write_json(out / "scores.json", evaluation.scores | module.evaluation_settings())
        write_json(out / "per_image.json", {str(k): v for k, v in evaluation.per_image.items()})
        if evaluation.grounding:
            write_json(out / "grounding.json", evaluation.grounding)
        # Where the time went: the whole test loop (decoding and the steps below), then within it the gathering of
        # every process's captions, their merge by image id, the scoring on rank 0 and the scores' broadcast.
        write_json(out / "timing.json", timing)
        if report:  # the report's re-run decodes on the device the evaluation used, with the same arithmetic
            title = f"{Path(ckpt).name} on the {split} split of {data_root}"
            device = trainer.strategy.root_device  # this process's device (rank 0's)
            page = split_report(module.to(device), data.records(split), out / "report.html", title, report_max)
            print(f"wrote {page}")
        return evaluation.scores
    return {}  # other DDP ranks: rank 0 reports


def split_report(
    module: CaptioningModule, records: Sequence[CaptionRecord], path: Path, title: str, max_images: int
) -> Path:
    """The HTML report of the split ``module`` was just tested on: its scores, and the captions and attention of at
    most ``max_images`` of its images (generated again, with the same decoding, for their attention maps)."""
    evaluation = module.evaluator.last
    per_image = evaluation.per_image
    shown = set(spread({i: s.get("CIDEr", 0.0) for i, s in per_image.items()}, max_images))
    chosen = [r for r in records if r.image_id in shown]
    items = caption_images(module, [r.path for r in chosen])
    evaluated = {row["image_id"]: row["caption"] for row in evaluation.results}
    rows = [
        ReportRow(r.image_id, Path(r.path).name, list(r.captions), per_image[r.image_id], item)
        for r, item in zip(chosen, items, strict=True)
    ]
    # The same decoding on the same pixels gives the same captions on CPU (tested); on a GPU, other batch shapes can
    # change the floating-point sums. Such a row keeps its evaluated caption and says what the re-run generated.
    differ = [row for row in rows if row.item.caption != evaluated[row.image_id]]
    for row in differ:
        row.note = f"evaluated caption; the attention strip is from a re-run that generated: {row.item.caption}"
        row.item.caption = evaluated[row.image_id]
    if differ:
        log.warning("%s: %d report captions differ from the evaluated ones", path, len(differ))
    return write_report(
        path, rows, evaluation.scores, title=title, grounding=evaluation.grounding, split_size=len(per_image)
    )


def grounding_targets(records: Sequence[CaptionRecord]) -> dict[int, GroundingTarget]:
    """Object boxes and image sizes of the records that have boxes (image headers only are read)."""
    targets = {}
    for record in records:
        if record.boxes:
            with Image.open(record.path) as image:
                targets[record.image_id] = GroundingTarget(*image.size, record.boxes)
    return targets
