"""Inference: captions (and attention) of image files, the attention figures of ``captioning visualize``, and
captions of many files written to a resumable ``.jsonl`` or ``.csv`` file (``captioning caption ... --out``).

The output files. Every image listed gets exactly one record: its caption and beam score, or the one-line error
that made it unreadable (it is skipped, with a logged warning, and the run goes on).

- ``.jsonl``: a first header line ``{"model": {"checkpoint", "fingerprint"}, "decoding": {...}}``, then one line
  per image: ``{"image", "caption", "score"}`` or ``{"image", "error"}``.
- ``.csv``: columns ``image,caption,score,error``; the header object above goes to ``<name>.meta.json`` beside it.

Running the same command again resumes: images already in the file (captioned or failed) are skipped, and an
unfinished last line (a run stopped while writing) is cut off and redone. A file written by another model (weights,
vocabulary or input size: the fingerprint) or with other decoding settings is refused with a one-line error rather
than mixed into. To retry the failed images, delete their records.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from captioning.api import CaptioningModel
from captioning.data.images import load_image, normalize_image, resize_image
from captioning.decoding import DecodingSpec
from captioning.errors import CaptioningError
from captioning.models.modes import inference
from captioning.module import CaptioningModule
from captioning.viz.figures import Captioned, draw, split_generation
from captioning.viz.gates import BlockGates, backbone_gates, plot_gates


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
    module: CaptioningModule, items: Sequence[Captioned], blocks: list[str], source: str, batch_size: int = 32
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
            raise CaptioningError(f"{source}: {e}") from e
    return {
        name: BlockGates(
            torch.cat([part[name].channel for part in parts]),
            None if parts[0][name].spatial is None else torch.cat([part[name].spatial for part in parts]),
        )
        for name in parts[0]
    }


def visualize_images(
    module: CaptioningModule,
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    beam_size: int | None = None,
    top_k: int = 5,
    gates: Sequence[str] | None = None,
    source: str = "the model",
) -> list[tuple[Captioned, list[Path]]]:
    """Per image, each generated word over its spatial attention map (one row per attended layer) and, for channel
    attention, the weights over words x channels (``top_k`` channels listed per word); with ``gates`` (block names
    or ``["all"]``) also the backbone's CBAM/SE gates. Writes ``OUT/<stem>*.png``; returns each image's captioned
    item and its figure files. ``source`` names the model in errors (e.g. the checkpoint path)."""
    out = Path(out)
    items = caption_images(module, paths, beam_size=beam_size)
    if not gates and not any(item.spatial or item.channel for item in items):
        raise CaptioningError(f"{source}: the model has no decoder attention to draw (attention none)")
    gated = _gates(module, items, list(gates), source) if gates else None
    drawn = []
    for row, (stem, item) in enumerate(zip(figure_stems(paths), items, strict=True)):
        files = draw(item, out / stem, top_k=top_k)
        if gated is not None:
            files.append(plot_gates(item.pixels, gated, row, f"{out / stem}_gates.png"))
        drawn.append((item, files))
    return drawn


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
CSV_FIELDS = ("image", "caption", "score", "error")
log = logging.getLogger(__name__)


def image_files(sources: Sequence[str | Path]) -> list[Path]:
    """Image files from ``IMAGE|DIR|GLOB`` arguments, in their order, each once: a file as it is, a folder walked
    (subfolders too) for ``IMAGE_SUFFIXES`` files in sorted order, a glob pattern (``**`` recursive) expanded in sorted
    order, keeping folders and ``IMAGE_SUFFIXES`` files. A source that names nothing raises a one-line
    :class:`CaptioningError`."""
    found: dict[Path, None] = {}  # ordered, without duplicates
    for source in sources:
        path = Path(source)
        if path.is_dir():
            walked = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            found.update(dict.fromkeys(walked))
        elif path.is_file():
            found[path] = None
        elif glob.has_magic(str(source)):
            matches = sorted(glob.glob(str(source), recursive=True))
            matches = [m for m in matches if Path(m).is_dir() or Path(m).suffix.lower() in IMAGE_SUFFIXES]
            if not matches:
                raise CaptioningError(f"{source}: no image file or folder matches this pattern")
            found.update(dict.fromkeys(image_files(matches)))
        else:
            raise CaptioningError(f"{source}: image file or folder not found")
    return list(found)


@dataclass
class CaptionRun:
    """What :func:`caption_files` did."""

    out: Path
    captioned: int  # images captioned by this run
    already: int  # images the file held before (a resumed run skips them)
    failed: list[tuple[str, str]]  # this run's unreadable images and their errors


def output_header(model: CaptioningModel, decoding: DecodingSpec) -> dict:
    """What a captions file records about the model and decoding settings that wrote it."""
    source = model.config.get("source") or {}
    return {
        "model": {"checkpoint": source.get("checkpoint"), "fingerprint": model.fingerprint()},
        "decoding": dataclasses.asdict(decoding),
    }


def caption_files(
    model: CaptioningModel,
    files: Sequence[str | Path],
    out: str | Path,
    *,
    decoding: DecodingSpec | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> CaptionRun:
    """Captions ``files`` into ``out`` (``.jsonl`` or ``.csv``; see the module docstring), ``batch_size`` images per
    forward pass, resuming where an earlier run of the same model and settings stopped.

    Raises:
        CaptioningError: ``out`` has another suffix, or was written by another model or with other settings.
    """
    out = Path(out)
    if out.suffix not in (".jsonl", ".csv"):
        raise CaptioningError(f"{out}: the output must be a .jsonl or .csv file")
    decoding = decoding or model.decoding
    header = output_header(model, decoding)
    done = _resume(out, header)
    # Each image once, in order; an image is the file it names, however the path was written (relative paths resolve
    # from the working folder).
    done_files = {_key(image) for image in done}
    todo = [f for f in dict.fromkeys(files) if _key(f) not in done_files]
    failed: list[tuple[str, str]] = []
    with (
        out.open("a", encoding="utf-8", newline="") as stream,
        tqdm(total=len(todo), unit="image", disable=not progress) as bar,
    ):
        for first in range(0, len(todo), batch_size):
            chunk = todo[first : first + batch_size]
            pixels, errors = {}, {}
            for path in chunk:
                try:
                    pixels[path] = model.prepare(path)  # (3, S, S) uint8
                except CaptioningError as e:
                    errors[path] = str(e)
                    log.warning("skipped %s", e)
            captions = model.caption_pixels(torch.stack(list(pixels.values())), decoding=decoding) if pixels else []
            results = dict(zip(pixels, captions, strict=True))
            for path in chunk:
                if path in results:
                    record = {"image": str(path), "caption": results[path].caption, "score": results[path].score}
                else:
                    record = {"image": str(path), "error": errors[path]}
                    failed.append((str(path), errors[path]))
                stream.write(_record_line(record, out.suffix))
            stream.flush()  # a run stopped now keeps every finished batch
            bar.update(len(chunk))
    return CaptionRun(out, len(todo) - len(failed), len(done), failed)


def _record_line(record: dict, suffix: str) -> str:
    if suffix == ".jsonl":
        return json.dumps(record) + "\n"
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow([record.get(field, "") for field in CSV_FIELDS])
    return line.getvalue()


def _key(image: str | Path) -> str:
    return str(Path(image).resolve())


def _resume(out: Path, header: dict) -> set[str]:
    """The images ``out`` already holds, after checking that ``header`` (model and settings) is the file's; cuts an
    unfinished last line off. A new (or empty) file gets the header: its first line, or ``<name>.meta.json``."""
    meta = out.with_suffix(".meta.json")
    try:
        data = out.read_bytes() if out.exists() else b""
        complete = data[: data.rfind(b"\n") + 1]  # lines a stopped run finished
        lines = complete.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CaptioningError(f"{out}: cannot read it as a captions file ({e})") from e
    if data and not lines:  # a file of someone else's (or a header cut short): never overwritten
        raise CaptioningError(f"{out}: not a captions file (no complete line); write to a new file")
    if not lines:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".jsonl":
            out.write_text(json.dumps(header) + "\n", encoding="utf-8")
        else:
            meta.write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")
            out.write_text(",".join(CSV_FIELDS) + "\n", encoding="utf-8")
        return set()
    if out.suffix == ".jsonl":
        written = _json_line(out, lines[0], 1)
        rows = [_json_line(out, line, number) for number, line in enumerate(lines[1:], start=2)]
        images = [row.get("image") for row in rows]
    else:
        if not meta.is_file():
            raise CaptioningError(f"{out}: no {meta.name} beside it to say which model wrote it; write a new file")
        written = _json_line(meta, meta.read_text(), 1)
        rows_csv = list(csv.reader(lines))
        if tuple(rows_csv[0]) != CSV_FIELDS:
            raise CaptioningError(f"{out}: not a captions file (its header is not {','.join(CSV_FIELDS)})")
        images = [row[0] if row else None for row in rows_csv[1:]]
    _check_header(out, written, header)
    if any(image is None for image in images):
        raise CaptioningError(f"{out}: a record without an image; not a captions file")
    if len(complete) < len(data):  # checked first: a refused file is left as it is
        with out.open("r+b") as stream:
            stream.truncate(len(complete))
    return set(images)


def _json_line(path: Path, line: str, number: int) -> dict:
    try:
        value = json.loads(line)
    except ValueError as e:
        raise CaptioningError(f"{path}: line {number} is not JSON ({e})") from e
    if not isinstance(value, dict):
        raise CaptioningError(f"{path}: line {number} is not a JSON object")
    return value


def _check_header(out: Path, written: dict, header: dict) -> None:
    if "model" not in written or "decoding" not in written:
        raise CaptioningError(f"{out}: not a captions file (no model and decoding header)")
    fingerprint = (written.get("model") or {}).get("fingerprint")
    if fingerprint != header["model"]["fingerprint"]:
        raise CaptioningError(
            f"{out}: written by another model (checkpoint {written['model'].get('checkpoint')}: other weights, "
            "vocabulary or input size); write to a new file"
        )
    if written["decoding"] != header["decoding"]:
        changed = sorted(
            k
            for k in {*written["decoding"], *header["decoding"]}
            if written["decoding"].get(k) != header["decoding"].get(k)
        )
        first = changed[0]
        raise CaptioningError(
            f"{out}: written with other decoding settings ({first} {written['decoding'].get(first)}, now "
            f"{header['decoding'].get(first)}); write to a new file or use its settings"
        )
