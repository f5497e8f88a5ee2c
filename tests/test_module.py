"""A checkpoint written by an earlier release still loads and decodes as it did.

``tests/fixtures/sca_89373c1.ckpt`` is a tiny CBAM ResNet + SCA-CNN model saved by ``Trainer.save_checkpoint`` with the
code of commit 89373c1 (the release before the library layer and the attention registries); ``sca_89373c1.json``
holds what that code generated from it for three fixed random images (beam size 2). Both were written by
``PYTHONPATH=<checkout of 89373c1> python tests/fixtures/make_old_checkpoint.py tests/fixtures``."""

import dataclasses
import json

import pytest
import torch
from conftest import FIXTURES, tiny_module

import captioning
from captioning.api import CaptioningModel
from captioning.checkpoints import load_checkpoint, upgrade_hyperparameters
from captioning.decoding import DecodingSpec
from captioning.export.pretrained import save_pretrained
from captioning.metrics.evaluator import EvaluationSpec
from captioning.models.captioner import EncoderSpec
from captioning.module import CaptioningModule, CrossEntropy, OptimizationSpec
from captioning.scst import SelfCritical


def moment(weights: torch.Tensor) -> float:
    """As tests/fixtures/make_old_checkpoint.py computes it: sum of w * position over the last dimension."""
    return float((weights * torch.linspace(0, 1, weights.shape[-1])).sum())


def test_a_checkpoint_of_commit_89373c1_loads_and_decodes_as_it_did():
    expected = json.loads((FIXTURES / "sca_89373c1.json").read_text())
    module = load_checkpoint(FIXTURES / "sca_89373c1.ckpt")
    assert module.hparams.decoder.attention == "sca" and module.hparams.decoding.beam_size == 2
    assert module.evaluation_settings()["vocabulary"] == {"size": 11, "counted": "train", "min_count": 1}
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    captions, generation = module.generate(images)
    assert captions == expected["captions"]
    expected_log_probs = [value for row in expected["log_probs"] for value in row]  # (B, n_best) as nested lists
    # 1e-4: another CPU's float32 kernels move these sums of logs (about -5 to -9) by about 1e-6; other weights or a
    # changed decoder move them by far more
    assert generation.nbest_log_probs.flatten().tolist() == pytest.approx(expected_log_probs, abs=1e-4)
    moments = {name: moment(weights) for name, weights in sorted(generation.attention.items())}
    assert moments == pytest.approx(expected["attention_moments"], abs=1e-4)  # every layer's maps, spatial and channel


def test_flat_settings_of_older_checkpoints_move_into_their_groups():
    """What ``fit`` saved before the settings were grouped (commit 79acff5 and earlier): flat keys, the specs as the
    config's dicts, LightningCLI's ``_instantiator``, SCST as a flag."""
    saved = {
        "_instantiator": "pytorch_lightning.cli.instantiate_module",
        "vocabulary": ["<pad>", "<bos>", "<eos>", "<unk>", "a"],
        "encoder": {"depth": 18, "width": 8, "train_modules": ["layer4"], "trainable": False},
        "decoder": {"attention": "soft", "sca_layers": []},
        "lr": 5e-5,
        "optimizer": "adadelta",
        "encoder_lr": 1e-5,
        "encoder_frozen_epochs": 2,
        "encoder_unfreeze": ["layer4"],
        "attention_reg": 0.0,
        "sample_prob": 0.25,
        "beam_size": 3,
        "block_trigrams": True,
        "metrics": ["Bleu", "CIDEr"],
        "tokenizer": "python",
        "scst": True,
        "scst_samples": 4,
        "scst_baseline": "mean",
    }
    hp = upgrade_hyperparameters(saved)
    assert set(hp) == {"vocabulary", "encoder", "decoder", "optimization", "loss", "decoding", "evaluation", "scst"}
    assert hp["encoder"] == EncoderSpec(depth=18, width=8, train_modules=("layer4",), trainable=False)
    assert hp["optimization"] == OptimizationSpec(optimizer="adadelta", lr=5e-5, encoder_lr=1e-5)
    assert hp["loss"] == CrossEntropy(attention_reg=0.0, sample_prob=0.25)
    assert hp["decoding"] == DecodingSpec(beam_size=3, block_trigrams=True)
    assert hp["evaluation"] == EvaluationSpec(metrics=("Bleu", "CIDEr"), tokenizer="python")
    assert hp["scst"] == SelfCritical(samples=4, baseline="mean")
    assert upgrade_hyperparameters({**saved, "scst": False})["scst"] is None
    module = CaptioningModule(**hp)  # what load_checkpoint builds
    assert module.decoding.beam_size == 3 and module.scst_spec.samples == 4


def test_loading_a_model_built_on_imagenet_weights_fetches_nothing(tmp_path, monkeypatch):
    """Every tensor comes from the checkpoint or the export: torch.hub's file (a pickle, and a download) is not read.
    The weights' name still shapes the model: CBAM grafted onto them has gates 2 * sigmoid(z)."""
    encoder = EncoderSpec(depth=18, attention="cbam", width=64, weights="IMAGENET1K_V1")
    module = tiny_module(encoder=dataclasses.asdict(encoder), fetch_weights=False)
    path = tmp_path / "imagenet.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)

    def refuse(*args, **kwargs):
        raise AssertionError("ImageNet weights fetched while loading")

    monkeypatch.setattr("captioning.models.encoder.load_imagenet_weights", refuse)
    loaded = load_checkpoint(path)
    assert loaded.hparams.encoder.weights == "IMAGENET1K_V1"
    gate = loaded.captioner.encoder.backbone.layer1[0].attention.channel
    assert float(gate.scale) == 2.0  # grafted: the gate form the weights' name chose
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert loaded.generate(images)[0] == module.eval().generate(images)[0]
    model = CaptioningModel.from_module(loaded, checkpoint=path)
    save_pretrained(model, tmp_path / "exported")
    picture = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert captioning.load(tmp_path / "exported").caption(picture)[0].caption == model.caption(picture)[0].caption
