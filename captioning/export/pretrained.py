"""A self-describing model folder in the Hugging Face Hub's layout: ``model.safetensors`` (the captioner's state
dict, tensors only), ``config.json`` (everything else needed to caption: specs, vocabulary, preprocessing, decoding;
and where the weights came from) and a model card ``README.md`` (:mod:`captioning.export.card`).

Reading a folder unpickles nothing: safetensors and JSON only, so a folder from an untrusted source cannot run code.
The file names are huggingface_hub's (``constants.SAFETENSORS_SINGLE_FILE``, ``CONFIG_NAME``, ``REPOCARD_NAME``:
what ``ModelHubMixin`` writes), so ``huggingface_hub.upload_folder`` publishes the folder as it is and
``captioning.load("org/name")`` reads it back from the Hub.

``config.json`` (format version 1)::

    format, format_version, library_version
    encoder, decoder        EncoderSpec / DecoderSpec fields; blind
    vocabulary              {words, rule}
    image_size, preprocessing   what the pixels go through before the encoder
    decoding                DecodingSpec fields: the default settings of caption()
    source                  the checkpoint exported (path, epoch, global step), or null
    validation              the checkpoint callback's monitored score (monitor, mode, score, of), or null
    training, data          what the run folder beside the checkpoint records (run.json, config.yaml), or null
"""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml
from huggingface_hub import constants
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from captioning.data.images import IMAGENET_MEAN, IMAGENET_STD
from captioning.decoding import DecodingSpec
from captioning.errors import CaptioningError
from captioning.export.card import model_card
from captioning.models.captioner import Captioner, DecoderSpec, EncoderSpec
from captioning.module import CaptioningModule, read_checkpoint
from captioning.vocab import Vocabulary

FORMAT = "captioning"
FORMAT_VERSION = 1
WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE  # model.safetensors
CONFIG_NAME = constants.CONFIG_NAME  # config.json
CARD_NAME = constants.REPOCARD_NAME  # README.md


class Exportable(Protocol):
    """What :func:`save_pretrained` writes: a :class:`captioning.api.CaptioningModel` (the export layer sits below
    the API, so it names the attributes it reads instead of importing the class)."""

    captioner: Captioner
    vocab: Vocabulary
    image_size: int
    decoding: DecodingSpec
    config: dict


def preprocessing() -> dict:
    """What :mod:`captioning.data.images` does to a picture before the encoder, as data."""
    return {
        "color": "RGB, 8 bits (EXIF orientation applied, transparency over white)",
        "resize": "antialiased bilinear to image_size x image_size (aspect ratio not kept)",
        "scale": 1 / 255,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def spec_dict(spec: EncoderSpec | DecoderSpec | DecodingSpec | Mapping) -> dict:
    """A settings dataclass (or the dict an older checkpoint holds) -> plain JSON data (tuples as lists)."""
    data = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(spec)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}


def _spec(cls: type, data: Mapping, source: str) -> Any:
    """``cls(**data)`` with JSON lists back as tuples; a one-line error naming ``source`` for unknown fields."""
    fields = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(data) - fields):
        raise CaptioningError(f"{source}: {cls.__name__} has no field(s) {unknown} (written by a newer version?)")
    return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


def module_config(module: CaptioningModule, *, checkpoint: str | Path | None = None) -> dict:
    """The ``config.json`` of a module, with where it came from when it was read from ``checkpoint``: the file, its
    epoch and step, the checkpoint callback's validation score, and the run folder's records."""
    hp = module.hparams
    state = _checkpoint_state(Path(checkpoint)) if checkpoint is not None else None
    run = _run_folder(Path(checkpoint)) if checkpoint is not None else None
    run_config = _read_yaml(run / "config.yaml") if run and (run / "config.yaml").is_file() else {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": _version("captioning"),
        "encoder": spec_dict(hp.encoder),
        "decoder": spec_dict(hp.decoder),
        "blind": bool(hp.blind),
        "vocabulary": {"words": list(module.vocab.words), "rule": module.vocab.rule},
        "image_size": int(hp.image_size),
        "preprocessing": preprocessing(),
        "decoding": spec_dict(DecodingSpec(**module.evaluation_settings()["decoding"])),
        "source": _source(Path(checkpoint), state) if checkpoint is not None else None,
        "validation": _validation(Path(checkpoint), state) if state else None,
        "training": _training(run, run_config, state) if checkpoint is not None else None,
        "data": run_config.get("data") or None,
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _checkpoint_state(path: Path) -> dict | None:
    """The checkpoint's training bookkeeping (epoch, step, callback states), read as
    :func:`~captioning.module.read_checkpoint` reads checkpoints (``weights_only``); None where it cannot be."""
    try:
        checkpoint = read_checkpoint(path)
    except CaptioningError:
        return None
    return {key: checkpoint.get(key) for key in ("epoch", "global_step", "pytorch-lightning_version", "callbacks")}


def _source(path: Path, state: dict | None) -> dict:
    state = state or {}
    return {
        "checkpoint": str(path.resolve()),
        "epoch": state.get("epoch"),
        "global_step": state.get("global_step"),
        "pytorch_lightning": state.get("pytorch-lightning_version"),
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, torch.Tensor | float | int) else None


def _callback_settings(key: str) -> dict:
    """A callback's settings from its state key: Lightning keys a ``ModelCheckpoint``'s state by its class name and
    settings (``ModelCheckpoint{'monitor': 'val/CIDEr', 'mode': 'max', ...}``), and keeps ``mode`` only there."""
    try:
        settings = ast.literal_eval(key[key.index("{") :])
    except (ValueError, SyntaxError):
        return {}
    return settings if isinstance(settings, dict) else {}


def _validation(path: Path, state: dict) -> dict | None:
    """The monitored score of the checkpoint callback (``--checkpoint.*``: val/CIDEr by default) that the checkpoint
    holds: this checkpoint's own score where the callback's best file is this one (``best.ckpt``); else the run's
    latest validation score when it was saved (``last.ckpt``, whose weights may postdate that validation)."""
    for key, callback in (state.get("callbacks") or {}).items():
        if not isinstance(callback, Mapping) or not callback.get("monitor"):
            continue
        best, current = _number(callback.get("best_model_score")), _number(callback.get("current_score"))
        found = {"monitor": callback["monitor"], "mode": _callback_settings(key).get("mode")}
        if best is not None and Path(str(callback.get("best_model_path", ""))).name == path.name:
            return {**found, "score": best, "of": "this checkpoint (the run's best)"}
        if current is not None:
            return {**found, "score": current, "of": "the run's latest validation when it was saved", "best": best}
    return None


def _seconds(state: dict | None) -> float | None:
    """Training seconds, where the checkpoint holds Lightning's ``Timer`` state (``--trainer.max_time`` adds one)."""
    for callback in ((state or {}).get("callbacks") or {}).values():
        if isinstance(callback, Mapping) and isinstance(callback.get("time_elapsed"), Mapping):
            return _number(callback["time_elapsed"].get("train"))
    return None


def _run_folder(checkpoint: Path) -> Path | None:
    """The folder of the run that wrote ``checkpoint``: one beside it holding ``run.json`` or ``config.yaml``, or the
    newest ``<logger>/version_*`` log folder of its parent whose ``config.yaml`` names the checkpoint's folder (what
    ``captioning fit`` writes: ``RUN/checkpoints/best.ckpt``, ``RUN/lightning_logs/version_0/run.json``)."""
    folder = checkpoint.resolve().parent
    for candidate in (folder, folder.parent):
        if (candidate / "run.json").is_file():
            return candidate
    logs = sorted(folder.parent.glob("*/version_*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in logs:
        config = _read_yaml(candidate / "config.yaml") if (candidate / "config.yaml").is_file() else {}
        dirpath = (config.get("checkpoint") or {}).get("dirpath")
        if dirpath and Path(dirpath).resolve() == folder:
            return candidate
    return None


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _training(run: Path | None, run_config: dict, state: dict | None) -> dict:
    """Where and how long the run trained, from its run folder (``run.json``: platform, processes; ``config.yaml``:
    the Trainer's accelerator, devices, precision); None for what they do not record."""
    record = {}
    if run is not None and (run / "run.json").is_file():
        try:
            record = json.loads((run / "run.json").read_text())
        except (OSError, ValueError):
            record = {}
    trainer = run_config.get("trainer") or {}
    return {
        "run_folder": str(run) if run else None,
        "started": record.get("started"),
        "seconds": record.get("fit_seconds") or _seconds(state),  # run.json's since this release
        "platform": record.get("platform"),
        "machine": record.get("hardware"),
        "world_size": record.get("world_size"),
        "accelerator": trainer.get("accelerator"),
        "devices": trainer.get("devices"),
        "num_nodes": trainer.get("num_nodes"),
        "precision": trainer.get("precision") or ("32-true" if trainer else None),  # null: Lightning's default
        "epochs": None if state is None or state.get("epoch") is None else state["epoch"] + 1,
        "steps": None if state is None else state.get("global_step"),
        "seed": record.get("seed", run_config.get("seed_everything")),
        "git": record.get("git"),
        "versions": record.get("versions"),
    }


def save_pretrained(model: Exportable, out: str | Path, *, license: str = "mit") -> Path:
    """Writes ``OUT/model.safetensors``, ``OUT/config.json`` and the model card ``OUT/README.md`` (``license``: a
    Hub license id for the card's front matter); returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share memory or are not contiguous: the state dict is copied into plain ones
    state = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.captioner.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})  # "pt": what transformers' loaders expect
    config = {
        **model.config,
        "vocabulary": {"words": list(model.vocab.words), "rule": model.vocab.rule},
        "image_size": model.image_size,
        "decoding": spec_dict(model.decoding),
    }
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    parameters = sum(p.numel() for p in model.captioner.parameters())
    model_card(config, parameters=parameters, license=license).save(out / CARD_NAME)
    return out


def read_config(folder: Path) -> dict:
    """``FOLDER/config.json``, checked: this format, a version this library reads, this library's preprocessing."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CaptioningError(
            f"{folder}: not an exported model folder (no {CONFIG_NAME}; captioning export writes one)"
        )
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CaptioningError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CaptioningError(f"{path}: not a captioning model config (format is not {FORMAT!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise CaptioningError(f"{path}: format version {config.get('format_version')}; this library reads 1")
    steps = config.get("preprocessing") or {}
    if (steps.get("mean"), steps.get("std")) != (list(IMAGENET_MEAN), list(IMAGENET_STD)):
        raise CaptioningError(f"{path}: its normalization (mean/std) is not the one this library applies")
    return config


def load_pretrained(folder: str | Path, *, device: str | torch.device = "cpu") -> tuple[Captioner, Vocabulary, dict]:
    """Reads a folder written by :func:`save_pretrained` (no pickle: JSON and safetensors): the captioner in eval
    mode on ``device``, its vocabulary, and the config."""
    folder = Path(folder)
    config = read_config(folder)
    source = str(folder / CONFIG_NAME)
    try:
        vocab = Vocabulary(config["vocabulary"]["words"], rule=config["vocabulary"].get("rule"))
        encoder = _spec(EncoderSpec, config["encoder"], source)
        decoder = _spec(DecoderSpec, config["decoder"], source)
        captioner = Captioner.build(  # every tensor comes from model.safetensors: no ImageNet file fetched
            len(vocab), encoder, decoder, blind=config["blind"], bos=vocab.bos, load_weights=False
        )
        _spec(DecodingSpec, config["decoding"], source)  # checked here: caption() reads it
    except (KeyError, TypeError, ValueError) as e:
        raise CaptioningError(f"{source}: not a complete model config ({type(e).__name__}: {e})") from e
    weights = folder / WEIGHTS_NAME
    try:
        state = load_file(str(weights), device=str(device))
    except (OSError, SafetensorError) as e:
        raise CaptioningError(f"{weights}: cannot read the weights ({e})") from e
    try:
        captioner.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CaptioningError(f"{weights}: the weights do not fit the model {CONFIG_NAME} describes ({first})") from e
    return captioner.to(device).eval(), vocab, config


def decoding_spec(config: Mapping, *, source: str = CONFIG_NAME) -> DecodingSpec:
    """The default decoding settings a config records."""
    return _spec(DecodingSpec, config.get("decoding") or {}, source)
