"""``captioning demo`` (what ``make demo`` runs): the whole pipeline on the synthetic shapes set.

Generates the data and its image cache if absent, trains the configured model and, at the same time in a child
process on one thread, a *blind* twin (image features zeroed, same data, schedule and budget; its decoder attention
is ``none``, since attention over an all-zero map carries nothing and SCA's per-word recomputation would double the
demo's time for it), scores both on the test
split (the model's attention grounding against the shapes' boxes too, and the HTML report ``report.html``, with
its screenshot ``report.png`` where Chromium is installed), scores the references against each other (each image's
first reference against its other four), draws attention figures (with the backbone's CBAM gates), captions one
test image, and writes ``summary.md``. Every step is a public function of the library layer
(:mod:`captioning.workflows`), the ones the commands call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from captioning.checkpoints import load_checkpoint
from captioning.data.cache import CACHE_FOLDER, ImageCache
from captioning.data.coco import read_coco_captions
from captioning.data.shapes import generate_shapes
from captioning.errors import CaptioningError
from captioning.metrics import coco_scores
from captioning.viz.report import find_browser, screenshot
from captioning.viz.tables import grounding_markdown
from captioning.workflows.evaluation import evaluate
from captioning.workflows.inference import caption_images, visualize_images
from captioning.workflows.training import fit_arguments, train

COLUMNS = ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def reference_agreement(data: Path, split: str) -> dict[str, float]:
    """Scores each image's first reference against its other references (a human-agreement ceiling)."""
    records = read_coco_captions(data / f"captions_{split}.json", data / "images", split=split)
    candidates = {r.image_id: r.captions[0] for r in records}
    references = {r.image_id: list(r.captions[1:]) for r in records}
    return coco_scores(candidates, references)[0]


def summary_table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| test split | BLEU-1 | BLEU-4 | METEOR | ROUGE-L | CIDEr-D |", "|---|---|---|---|---|---|"]
    for name, scores in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{scores[c]:.3f}" for c in COLUMNS) + " |")
    model, blind, refs = (rows[k]["CIDEr"] for k in rows)
    lines += [
        "",
        f"CIDEr-D model / blind: {model / max(blind, 1e-9):.1f}x (goal: >= 4x)",
        f"CIDEr-D model / reference agreement: {model / max(refs, 1e-9):.2f}x (goal: >= 1.0x)",
    ]
    return "\n".join(lines) + "\n"


class Stopwatch:
    """Wall time of the demo's phases, for ``summary.md`` (the demo's time on this machine is part of its result)."""

    def __init__(self) -> None:
        self.start = self.mark = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = now - self.mark
        self.mark = now

    def markdown(self) -> str:
        total = time.perf_counter() - self.start
        cells = ", ".join(f"{phase} {_minutes(seconds)}" for phase, seconds in self.phases.items())
        return f"Wall time: {_minutes(total)} ({cells}; {os.cpu_count()} CPU cores).\n"


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


class BackgroundFit:
    """``captioning fit`` in a child process on one thread, its output in ``fit.log`` of the run folder; a context
    manager, so that an error in the parent stops the child rather than leaving it running."""

    def __init__(self, configs: Sequence[str], data: Path, run: Path, extra: Sequence[str]) -> None:
        args = fit_arguments(configs, data, run, extra)
        run.mkdir(parents=True)
        self.run, self.log = run, run / "fit.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        print(f"training {run} in the background (its log: {self.log})")
        command = [sys.executable, "-m", "captioning", *args]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)

    def wait(self) -> Path:
        """Waits for the fit to end; returns its best checkpoint, or raises with the end of its log."""
        if self.process.wait() != 0:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            raise CaptioningError(f"{self.log}: the background fit failed (exit {self.process.returncode}):\n{tail}")
        return self.run / "checkpoints" / "best.ckpt"

    def __enter__(self) -> BackgroundFit:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:  # the parent failed before waiting: do not leave the child training
            self.process.kill()
            self.process.wait()


def demo(
    data: Path = Path("data/shapes"),
    out: Path = Path("outputs/demo"),
    *,
    config: str = "configs/shapes.yaml",
    figures: int = 4,
    seed: int | None = None,
) -> Path:
    """The whole pipeline (the module docstring) on the shapes set in ``data`` (made if absent) into ``out``, with
    the model of ``config``, attention figures of ``figures`` test images, and both trainings seeded with ``seed``
    (default: the config's). Returns the path of ``summary.md``."""
    clock = Stopwatch()
    if not (data / "captions_train.json").is_file():
        generate_shapes(data)
    settings = yaml.safe_load(Path(config).read_text())
    size = settings["data"]["image_size"]
    cache = data / CACHE_FOLDER
    if not ImageCache.exists(cache, size):  # decoded once here, not once per epoch and model; the data module finds it
        ImageCache.build(sorted((data / "images").rglob("*.png")), cache, image_size=size, workers=2)
    clock.lap("data")
    seeded = [] if seed is None else ["--seed_everything", str(seed)]
    blind_args = ["--model.blind", "true", "--model.decoder.attention", "none", *seeded]
    threads = torch.get_num_threads()
    with BackgroundFit([config], data, out / "blind", blind_args) as blind_fit:
        # the blind model trains in another process on one thread meanwhile; the main one leaves it a thread, so that
        # its numbers do not depend on when the other ends (README "Demo results" on what this saves)
        torch.set_num_threads(max(1, threads - 1))
        try:
            best = train([config], data, out / "main", seeded).best
        finally:
            torch.set_num_threads(threads)
        clock.lap("model fit (the blind model's alongside)")
        model_scores = evaluate(best, data, "test", out, report=True)
        clock.lap("its evaluation and report")
        blind = blind_fit.wait()
    blind_scores = evaluate(blind, data, "test", out / "blind")
    clock.lap("rest of the blind model's fit, its evaluation")
    agreement = reference_agreement(data, "test")
    (out / "reference_agreement.json").write_text(json.dumps(agreement, indent=2) + "\n")

    tests = sorted((data / "images" / "test").glob("*.png"))[:figures]
    gated = settings.get("model", {}).get("encoder", {}).get("attention", "none") != "none"  # CBAM or SE gates
    module = load_checkpoint(best)
    drawn = visualize_images(module, tests, out / "figures", gates=["all"] if gated else None, source=str(best))
    for path, (item, files) in zip(tests, drawn, strict=True):
        print("\t".join([str(path), item.caption, *map(str, files)]))
    if find_browser():  # a picture of the report page, as a browser shows it
        print(f"wrote {screenshot(out / 'report.html', out / 'report.png')}")
    else:
        print(f"{out / 'report.html'}: no screenshot without Chromium (Debian/Ubuntu: apt-get install chromium)")
    print("caption of one test image:")
    print(f"{tests[0]}\t{caption_images(module, [tests[0]])[0].caption}")
    clock.lap("references, figures, caption")
    table = summary_table({"model": model_scores, "blind (image zeroed)": blind_scores, "references": agreement})
    grounding_file = out / "grounding.json"
    if grounding_file.is_file():
        table += "\n" + grounding_markdown(json.loads(grounding_file.read_text()))
    table += "\n" + clock.markdown()
    (out / "summary.md").write_text(table)
    print("\n" + table)
    return out / "summary.md"
