"""Checkpoints: loading a :class:`~captioning.module.CaptioningModule` from a ``.ckpt`` alone, and the upgrade of the
settings that older releases saved flat (``lr``, ``beam_size``, ``scst``, ...) into today's grouped specs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import torch

from captioning.decoding import DecodingSpec
from captioning.errors import CaptioningError
from captioning.metrics.evaluator import EvaluationSpec
from captioning.models.captioner import DecoderSpec, EncoderSpec
from captioning.module import CaptioningModule, CrossEntropy, OptimizationSpec, first_line, read_checkpoint
from captioning.scst import SelfCritical

#: Flat hyperparameters of checkpoints written before the settings were grouped (commit 79acff5 and earlier) -> the
#: group and field they moved to. ``encoder_frozen_epochs`` / ``encoder_unfreeze`` (now the EncoderFinetuning
#: callback), the cross-entropy settings (now ``loss``) and ``scst*`` (now ``scst``) are handled in
#: :func:`upgrade_hyperparameters`.
_FLAT_SETTINGS = {
    "optimization": {f.name: f.name for f in dataclasses.fields(OptimizationSpec)},
    "decoding": {f.name: f.name for f in dataclasses.fields(DecodingSpec)},
    "evaluation": {f.name: f.name for f in dataclasses.fields(EvaluationSpec)},
}


def upgrade_hyperparameters(saved: Mapping) -> dict:
    """A checkpoint's saved hyperparameters as :class:`CaptioningModule` takes them today: the flat settings of
    older checkpoints (``lr``, ``beam_size``, ``scst``, ...) grouped into their specs; settings saved as plain dicts
    made into their classes. Settings of the training schedule that no longer live on the module
    (``encoder_frozen_epochs``, ``encoder_unfreeze``) are dropped: they do not change the weights."""
    # Keys Lightning adds for itself (LightningCLI's ``_instantiator``, ``_class_path``) are not settings.
    hp = {name: value for name, value in saved.items() if not name.startswith("_")}
    specs = {"encoder": EncoderSpec, "decoder": DecoderSpec, "loss": CrossEntropy, "scst": SelfCritical}
    for group, spec in (("optimization", OptimizationSpec), ("decoding", DecodingSpec), ("evaluation", EvaluationSpec)):
        flat = {field: _tuples(hp.pop(name)) for name, field in _FLAT_SETTINGS[group].items() if name in hp}
        if flat:
            hp[group] = spec(**flat)
        specs[group] = spec
    if isinstance(hp.get("scst"), bool):  # flat: a flag with scst_samples and scst_baseline beside it
        samples, baseline = hp.pop("scst_samples", 5), hp.pop("scst_baseline", "greedy")
        hp["scst"] = SelfCritical(samples=samples, baseline=baseline) if hp["scst"] else None
    if xe := {name: hp.pop(name) for name in ("attention_reg", "sample_prob", "sample_ramp_epochs") if name in hp}:
        hp["loss"] = CrossEntropy(**xe)
    for name in ("encoder_frozen_epochs", "encoder_unfreeze", "fetch_weights"):  # fetch_weights: LightningCLI saves it
        hp.pop(name, None)
    for name, spec in specs.items():
        if isinstance(hp.get(name), Mapping):
            value = dict(hp[name])
            hp[name] = spec(**{k: _tuples(v) for k, v in value.items()})
    return hp


def _tuples(value: object) -> object:
    """Lists as the specs' (hashable) tuples: a config's YAML lists arrive as lists."""
    return tuple(value) if isinstance(value, list) else value


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu", **decoding) -> CaptioningModule:
    """Loads a module from a checkpoint alone (vocabulary and settings are inside it), in eval mode.

    ``decoding`` replaces saved decoding settings (:class:`~captioning.decoding.DecodingSpec` fields: ``beam_size``,
    ``max_len``, ``length_penalty``, ``block_trigrams``, ...); they do not change the weights. Checkpoints of
    releases whose settings were flat load too (:func:`upgrade_hyperparameters`). Every tensor comes from the
    checkpoint: an encoder built on ImageNet weights is not fetched again.

    Uses ``weights_only`` unpickling (:func:`~captioning.module.read_checkpoint`): a checkpoint from an untrusted
    source cannot run code. (Lightning's ``load_from_checkpoint`` would pass the saved hyperparameters to the
    constructor as they are: the upgrade has to come between.)
    """
    if unknown := set(decoding) - {f.name for f in dataclasses.fields(DecodingSpec)}:
        raise ValueError(f"load_checkpoint: {sorted(unknown)} are not decoding settings (DecodingSpec)")
    checkpoint = read_checkpoint(path, map_location=map_location)
    try:
        hparams = upgrade_hyperparameters(checkpoint["hyper_parameters"])
        if decoding:
            hparams["decoding"] = dataclasses.replace(hparams.get("decoding", DecodingSpec()), **decoding)
        module = CaptioningModule(**hparams, fetch_weights=False)  # every tensor comes from the checkpoint
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise CaptioningError(f"{path}: not a readable captioning checkpoint ({first_line(e)})") from e
    return module.to(map_location).eval()
