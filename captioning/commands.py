"""Plain subcommands of ``captioning``: prepare, caption, evaluate, score, visualize (demo and ablate elsewhere)."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import yaml
from PIL import Image

from captioning.data.cache import CACHE_FOLDER, ImageCache
from captioning.data.coco import read_coco_references, read_coco_results
from captioning.data.datamodule import CaptionDataModule
from captioning.data.images import load_image, normalize_image, resize_image
from captioning.data.layouts import LAYOUTS
from captioning.data.prepare import prepare_dataset
from captioning.data.records import CaptionRecord
from captioning.data.shapes import generate_shapes
from captioning.data.standin import generate_coco_standin
from captioning.errors import CaptioningError
from captioning.metrics import METRICS, WITH_SPICE, coco_scores
from captioning.metrics.grounding import GroundingTarget, grounding_markdown, synonyms_for
from captioning.metrics.spice import fetch_spice_models
from captioning.models.modes import inference
from captioning.module import CaptioningModule, load_checkpoint
from captioning.viz.figures import Captioned, draw, split_generation
from captioning.viz.gates import BlockGates, backbone_gates, plot_gates
from captioning.viz.report import ReportRow, spread, write_report

log = logging.getLogger(__name__)


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"captioning {prog}", description=description)


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


# -- prepare ------------------------------------------------------------------------------------------------------
def prepare(argv: Sequence[str]) -> None:
    parser = _parser(
        "prepare",
        "Make the synthetic shapes set, check a real dataset folder (layout, annotations, every image; writes "
        "vocab.json, manifest.json, images.sha256, bad_images.tsv), or fetch SPICE's parser models.",
    )
    parser.add_argument(
        "dataset",
        choices=["shapes", "shapes-coco", *LAYOUTS, "spice"],
        help="shapes: generate the synthetic set; shapes-coco: a COCO-size stand-in in the COCO 2014 / Karpathy "
        "layout; coco (Karpathy split), coco2014/coco2017 (official files), flickr8k, flickr30k, custom: check a "
        "folder; spice: the CoreNLP jars SPICE needs (internet)",
    )
    parser.add_argument("--root", type=Path, help="dataset folder to check (all but shapes and spice)")
    parser.add_argument("--out", type=Path, help="shapes: folder to write; others: where reports go (default --root)")
    parser.add_argument("--train", type=int, default=4000, help="shapes: train images")
    parser.add_argument("--val", type=int, default=250, help="shapes: val images")
    parser.add_argument("--test", type=int, default=250, help="shapes: test images")
    parser.add_argument("--seed", type=int, default=0, help="shapes: generator seed")
    parser.add_argument("--scale", type=float, default=1.0, help="shapes-coco: fraction of COCO's 123,287 images")
    parser.add_argument("--image-size", type=int, help="shapes: image side (96); --cache: cached side (224)")
    parser.add_argument("--vocab-from", choices=["train", "all"], default="train", help="splits counted for vocab.json")
    parser.add_argument("--min-count", type=int, default=5, help="vocab.json keeps words seen this often")
    parser.add_argument("--no-merge-restval", action="store_true", help="Karpathy files: keep restval out of train")
    parser.add_argument("--workers", type=int, default=2, help="processes that check (and cache) images")
    parser.add_argument("--cache", action="store_true", help="also build the image cache (OUT/image_cache)")
    args = parser.parse_args(argv)
    if args.dataset == "spice":
        fetch_spice_models()
        return
    if args.dataset == "shapes-coco":
        if args.out is None:
            parser.error("prepare shapes-coco needs --out DIR")
        start = time.perf_counter()
        counts = generate_coco_standin(
            args.out, scale=args.scale, image_size=args.image_size or 32, seed=args.seed, workers=args.workers
        )
        seconds = time.perf_counter() - start
        print(f"wrote {args.out} in {seconds:.1f} s: " + ", ".join(f"{n} {split}" for split, n in counts.items()))
        return
    if args.dataset == "shapes":
        if args.out is None:
            parser.error("prepare shapes needs --out DIR")
        size = args.image_size or 96
        counts = generate_shapes(
            args.out, train=args.train, val=args.val, test=args.test, seed=args.seed, image_size=size
        )
        print(f"wrote {args.out}: " + ", ".join(f"{n} {split}" for split, n in counts.items()))
        if args.cache:
            paths = sorted((args.out / "images").rglob("*.png"))
            ImageCache.build(paths, args.out / CACHE_FOLDER, image_size=size, workers=args.workers)
        return
    if args.root is None:
        parser.error(f"prepare {args.dataset} needs --root DIR")
    report = prepare_dataset(
        args.dataset,
        args.root,
        out=args.out,
        vocab_from=args.vocab_from,
        min_count=args.min_count,
        merge_restval=not args.no_merge_restval,
        workers=args.workers,
        cache_size=(args.image_size or 224) if args.cache else None,
    )
    print(report.summary(args.dataset, args.root))


# -- caption / visualize ------------------------------------------------------------------------------------------
def caption_images(
    module: CaptioningModule, paths: Sequence[str | Path], *, beam_size: int | None = None, batch_size: int = 32
) -> list[Captioned]:
    """Captions image files, ``batch_size`` at a time; per image its caption, words, attention and resized pixels.

    The model runs in eval and inference mode whatever mode it was left in (:func:`~captioning.models.modes.inference`)
    and gets its train/eval flags back afterwards.
    """
    side = module.hparams.image_size
    out = []
    with inference(module):
        for first in range(0, len(paths), batch_size):
            pictures = [load_image(p) for p in paths[first : first + batch_size]]  # a one-line error names a bad file
            pixels = torch.stack([resize_image(p, side) for p in pictures])  # (B, 3, S, S) uint8
            images = normalize_image(pixels).to(module.device)  # (B, 3, S, S) float
            captions, generation = module.generate(images, beam_size=beam_size)
            out += split_generation(captions, generation, pixels.permute(0, 2, 3, 1).numpy())
    return out


def caption(argv: Sequence[str]) -> None:
    parser = _parser("caption", "Caption images with a trained checkpoint.")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--ckpt", required=True, help="checkpoint (.ckpt) written by fit")
    parser.add_argument("--beam-size", type=int, default=None, help="beams (default: the checkpoint's)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {image, caption}")
    args = parser.parse_args(argv)
    module = load_checkpoint(args.ckpt)
    results = caption_images(module, args.images, beam_size=args.beam_size)
    if args.json:
        print(json.dumps([{"image": p, "caption": r.caption} for p, r in zip(args.images, results, strict=True)]))
    else:
        for path, result in zip(args.images, results, strict=True):
            print(f"{path}\t{result.caption}")


def visualize(argv: Sequence[str]) -> list[Path]:
    parser = _parser(
        "visualize",
        "Draw, per image, each generated word over its spatial attention map (one row per attended layer) and, "
        "for channel attention, the weights over words x channels; optionally the backbone's CBAM gates.",
    )
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--ckpt", required=True, help="checkpoint (.ckpt) written by fit")
    parser.add_argument("--beam-size", type=int, default=None, help="beams (default: the checkpoint's)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNG figures")
    parser.add_argument("--top-k", type=int, default=5, help="channels listed per word in the channel figure")
    parser.add_argument(
        "--gates",
        nargs="+",
        metavar="BLOCK",
        help="also draw the CBAM/SE gates of these backbone blocks (e.g. layer1.0 layer4.1, or all)",
    )
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k must be at least 1, not {args.top_k}")
    if args.gates and "all" in args.gates and len(args.gates) > 1:
        parser.error("--gates takes block names or all, not both")
    module = load_checkpoint(args.ckpt)
    items = caption_images(module, args.images, beam_size=args.beam_size)
    if not args.gates and not any(item.spatial or item.channel for item in items):
        raise CaptioningError(f"{args.ckpt}: the model has no decoder attention to draw (attention none)")
    gates = _gates(module, items, args.gates, args.ckpt) if args.gates else None
    written = []
    for row, (path, stem, item) in enumerate(zip(args.images, figure_stems(args.images), items, strict=True)):
        stem = args.out / stem
        files = draw(item, stem, top_k=args.top_k)
        if gates is not None:
            files.append(plot_gates(item.pixels, gates, row, f"{stem}_gates.png"))
        print("\t".join([str(path), item.caption, *map(str, files)]))
        written += files
    return written


def figure_stems(paths: Sequence[str | Path]) -> list[str]:
    """File-name stems for the figures of ``paths``: the image's stem, numbered where two images share one
    (``a/cat.png`` and ``b/cat.jpg`` -> ``cat_1``, ``cat_2``), so no figure overwrites another."""
    stems = [Path(p).stem for p in paths]
    counts = Counter(stems)
    seen: dict[str, int] = {}
    out = []
    for stem in stems:
        if counts[stem] > 1:
            seen[stem] = seen.get(stem, 0) + 1
            stem = f"{stem}_{seen[stem]}"
        out.append(stem)
    return out


def _gates(
    module: CaptioningModule, items: Sequence[Captioned], blocks: list[str], ckpt: str, batch_size: int = 32
) -> dict[str, BlockGates]:
    """The backbone gates of ``blocks`` (``all``: every gated block) for the images the model saw, ``batch_size``
    images per encoder pass."""
    parts = []
    for first in range(0, len(items), batch_size):
        pixels = np.stack([item.pixels for item in items[first : first + batch_size]])  # (B, S, S, 3)
        images = normalize_image(torch.from_numpy(pixels).permute(0, 3, 1, 2))  # (B, 3, S, S) float
        try:
            parts.append(backbone_gates(module.captioner.encoder, images.to(module.device), blocks))
        except ValueError as e:
            raise CaptioningError(f"{ckpt}: {e}") from e
    return {
        name: BlockGates(
            torch.cat([part[name].channel for part in parts]),
            None if parts[0][name].spatial is None else torch.cat([part[name].spatial for part in parts]),
        )
        for name in parts[0]
    }


# -- train ----------------------------------------------------------------------------------------------------------
@dataclass
class TrainingRun:
    """What :func:`run_training` leaves behind."""

    best: Path  # the best-val-CIDEr checkpoint
    seconds: float  # wall time of ``fit``
    parameters: int  # trainable and frozen parameters of the model


def run_training(configs: Sequence[str], data: str | Path, run: str | Path, extra: Sequence[str] = ()) -> TrainingRun:
    """``captioning fit --config C1 --config C2 ...`` from scratch into ``run`` (a rerun replaces it)."""
    from captioning.cli import cli_main  # the CLI imports this module

    start = time.perf_counter()
    cli = cli_main(fit_arguments(configs, data, run, extra))
    seconds = time.perf_counter() - start
    return TrainingRun(Path(run) / "checkpoints" / "best.ckpt", seconds, sum(p.numel() for p in cli.model.parameters()))


def fit_arguments(configs: Sequence[str], data: str | Path, run: str | Path, extra: Sequence[str] = ()) -> list[str]:
    """The ``captioning fit`` arguments of :func:`run_training`; clears ``run`` (a rerun must not pick up an older
    best.ckpt)."""
    run = Path(run)
    shutil.rmtree(run, ignore_errors=True)
    args = ["fit", *(a for c in configs for a in ("--config", str(c))), "--data.root", str(data)]
    return [*args, "--trainer.default_root_dir", str(run), "--checkpoint.dirpath", str(run / "checkpoints"), *extra]


_SPICE_HELP = "also score SPICE where it can run (its jars: captioning prepare spice); else one line says why not"


# -- evaluate -----------------------------------------------------------------------------------------------------
def run_evaluation(
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

    With ``spice``, SPICE is scored too where it can run (else skipped with one line). With ``report``, also
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
    # Every COCO metric, whatever subset the run validated with (a config may trim validation to what checkpoint
    # selection needs).
    module.evaluator.metrics = WITH_SPICE if spice else METRICS
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
    if trainer.is_global_zero:
        out = Path(out)
        _write_json(out / "results.json", module.last_results)
        # The metrics at the top level, as before; then what they depend on, so that two runs' numbers can be compared.
        _write_json(out / "scores.json", module.last_scores | module.evaluation_settings())
        _write_json(out / "per_image.json", {str(k): v for k, v in module.last_per_image.items()})
        if module.last_grounding:
            _write_json(out / "grounding.json", module.last_grounding)
        # Where the time went: the whole test loop (decoding and the steps below), then within it the gathering of
        # every process's captions, their merge by image id, the scoring on rank 0 and the scores' broadcast.
        _write_json(out / "timing.json", timing)
        if report:  # the report's re-run decodes on the device the evaluation used, with the same arithmetic
            title = f"{Path(ckpt).name} on the {split} split of {data_root}"
            device = trainer.strategy.root_device  # this process's device (rank 0's)
            page = split_report(module.to(device), data.records(split), out / "report.html", title, report_max)
            print(f"wrote {page}")
        return module.last_scores
    return {}  # other DDP ranks: rank 0 reports


def split_report(
    module: CaptioningModule, records: Sequence[CaptionRecord], path: Path, title: str, max_images: int
) -> Path:
    """The HTML report of the split ``module`` was just tested on: its scores, and the captions and attention of at
    most ``max_images`` of its images (generated again, with the same decoding, for their attention maps)."""
    per_image = module.last_per_image
    shown = set(spread({i: s.get("CIDEr", 0.0) for i, s in per_image.items()}, max_images))
    chosen = [r for r in records if r.image_id in shown]
    items = caption_images(module, [r.path for r in chosen])
    evaluated = {row["image_id"]: row["caption"] for row in module.last_results}
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
        path, rows, module.last_scores, title=title, grounding=module.last_grounding, split_size=len(per_image)
    )


def grounding_targets(records: Sequence[CaptionRecord]) -> dict[int, GroundingTarget]:
    """Object boxes and image sizes of the records that have boxes (image headers only are read)."""
    targets = {}
    for record in records:
        if record.boxes:
            with Image.open(record.path) as image:
                targets[record.image_id] = GroundingTarget(*image.size, record.boxes)
    return targets


LAYOUT_KEYS = ("annotations", "annotation_file", "image_dir", "coco_splits", "merge_restval")


def data_layout(config: str | None, root: str | None, overrides: dict) -> tuple[str, dict]:
    """The dataset folder and file layout for ``evaluate``: a config's ``data:`` section (e.g.
    ``configs/data/flickr8k.yaml``; only its root and layout keys, the image size is the checkpoint's), then the
    explicit ``root`` and ``overrides`` on top."""
    section: dict = {}
    if config:
        try:
            section = (yaml.safe_load(Path(config).read_text()) or {}).get("data") or {}
        except (OSError, yaml.YAMLError) as e:
            raise CaptioningError(f"{config}: cannot read the data config ({e})") from e
    layout = {k: v for k, v in section.items() if k in LAYOUT_KEYS}
    layout |= {k: v for k, v in overrides.items() if v is not None}
    root = root or section.get("root")
    if not root:
        raise CaptioningError("evaluate needs --data-root DIR (or a --data-config whose data section has a root)")
    return str(root), layout


def evaluate(argv: Sequence[str]) -> dict[str, float]:
    parser = _parser("evaluate", "Caption a split and score it with the COCO metrics.")
    parser.add_argument("--ckpt", required=True, help="checkpoint (.ckpt) written by fit")
    parser.add_argument("--data-root", help="dataset folder (as for fit's --data.root)")
    parser.add_argument("--data-config", help="a config with the dataset's layout, e.g. configs/data/flickr8k.yaml")
    parser.add_argument("--annotations", choices=["coco", "karpathy", "custom"], help="file layout (default coco)")
    parser.add_argument("--annotation-file", help="karpathy: the split file; custom: captions.csv or .jsonl")
    parser.add_argument("--image-dir", help="image folder inside the dataset folder (default images)")
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--out", required=True, help="folder for results.json, scores.json, per_image.json")
    parser.add_argument("--beam-size", type=int, default=None, help="beams (default: the checkpoint's)")
    parser.add_argument("--min-len", type=int, default=None, help="fewest words (default: the checkpoint's)")
    parser.add_argument("--length-penalty", choices=["none", "average", "gnmt"], default=None, help="beam ranking")
    parser.add_argument("--block-trigrams", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--devices", type=int, default=1, help="processes; >1 on CPU runs DDP over gloo")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--spice", action=argparse.BooleanOptionalAction, default=True, help=_SPICE_HELP)
    parser.add_argument("--report", action="store_true", help="also write OUT/report.html (one self-contained page)")
    parser.add_argument("--report-max", type=int, default=1000, help="images shown in the report at most")
    parser.add_argument("--features", help="pre-extracted features of the checkpoint's CNN (captioning extract)")
    args = parser.parse_args(argv)
    if args.report_max < 1:
        parser.error(f"--report-max must be at least 1, not {args.report_max}")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    explicit = {"annotations": args.annotations, "annotation_file": args.annotation_file, "image_dir": args.image_dir}
    root, layout = data_layout(args.data_config, args.data_root, explicit)
    scores = run_evaluation(
        args.ckpt,
        root,
        args.split,
        args.out,
        beam_size=args.beam_size,
        decoding={
            "min_len": args.min_len,
            "length_penalty": args.length_penalty,
            "block_trigrams": args.block_trigrams,
        },
        devices=args.devices,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        spice=args.spice,
        report=args.report,
        report_max=args.report_max,
        layout=layout,
        features=args.features,
    )
    if scores:
        print(json.dumps(scores, indent=2))
        grounding = Path(args.out) / "grounding.json"
        if grounding.is_file():
            print("\n" + grounding_markdown(json.loads(grounding.read_text())), end="")
    return scores


def score(argv: Sequence[str]) -> dict[str, float]:
    """``captioning score REFERENCES RESULTS``: pycocoevalcap's numbers for a results file.

    As ``COCOEvalCap`` does: the images scored are those of the results (the reference file may hold more, e.g. the
    40,504 val2014 images for the 5,000 Karpathy test results), each against every one of its references, also
    those that tokenize to nothing (:func:`~captioning.data.coco.read_coco_references`). A result image without
    references, or a caption that is not a string, is an error.
    """
    parser = _parser("score", "Score a COCO results file against a COCO captions file.")
    parser.add_argument("references", type=Path, help="COCO captions file (the ground truth; may hold more images)")
    parser.add_argument("predictions", type=Path, help="COCO results file: [{image_id, caption}, ...]")
    parser.add_argument("--out", type=Path, default=None, help="write the scores here as JSON")
    parser.add_argument("--per-image", type=Path, default=None, help="write per-image scores here as JSON")
    parser.add_argument("--spice", action=argparse.BooleanOptionalAction, default=True, help=_SPICE_HELP)
    args = parser.parse_args(argv)
    candidates = read_coco_results(args.predictions)
    if not candidates:
        raise CaptioningError(f"{args.predictions}: the results file holds no captions")
    references = read_coco_references(args.references, image_ids=candidates.keys())
    scores, per_image = coco_scores(candidates, references, metrics=WITH_SPICE if args.spice else METRICS)
    if args.out:
        _write_json(args.out, scores)
    if args.per_image:
        _write_json(args.per_image, {str(k): v for k, v in per_image.items()})
    print(json.dumps(scores, indent=2))
    return scores


# -- extract ------------------------------------------------------------------------------------------------------
def extract(argv: Sequence[str]) -> dict[str, int]:
    parser = _parser(
        "extract",
        "Run the frozen part of a config's encoder once over every image of its splits and store what the decoder "
        "reads (float16 memory maps + manifest); fit, validate, test, evaluate and ablate then read it with "
        "--data.features OUT. Other options (--config, --data.*, --model.*) are fit's.",
    )
    parser.add_argument("--out", type=Path, required=True, help="feature folder to write (or resume)")
    parser.add_argument("--splits", nargs="+", choices=["train", "val", "test"], default=["train", "val", "test"])
    parser.add_argument("--shard", type=int, default=0, help="this process writes shard K of --shards (0-based)")
    parser.add_argument("--shards", type=int, default=1, help="shards run as separate processes or GPUs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2, help="image-reading worker processes")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda:SHARD if available)")
    args, fit_args = parser.parse_known_args(argv)
    from captioning.cli import build_from_config  # the CLI imports this module
    from captioning.extract import extract_features

    module, data = build_from_config(fit_args)
    if data.feature_store is not None:
        raise CaptioningError("extract reads images: leave --data.features out of its config")
    device = args.device
    if device == "auto":
        count = torch.cuda.device_count()
        device = f"cuda:{args.shard % count}" if count else "cpu"
    if module.hparams.init_weights:  # the weights a run from this config starts from
        module.load_init_weights()
    written = extract_features(
        module,
        {split: data.records(split) for split in args.splits},
        args.out,
        image_cache=data.image_cache,
        shard=args.shard,
        shards=args.shards,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=device,
    )
    print(f"{args.out}: " + ", ".join(f"{split} {n} images written" for split, n in written.items()))
    return written


def _demo(argv: Sequence[str]) -> None:
    from captioning.demo import main

    main(argv)


def _ablate(argv: Sequence[str]) -> None:
    from captioning.ablation import main

    main(argv)


COMMANDS = {
    "prepare": prepare,
    "caption": caption,
    "evaluate": evaluate,
    "score": score,
    "visualize": visualize,
    "demo": _demo,
    "ablate": _ablate,
    "extract": extract,
}
