"""A checkpoint written by an earlier release still loads and decodes as it did.

``tests/data/sca_89373c1.ckpt`` is a tiny CBAM ResNet + SCA-CNN model saved by ``Trainer.save_checkpoint`` with the
code of commit 89373c1 (the release before the library layer and the attention registries); ``sca_89373c1.json``
holds what that code generated from it for three fixed random images (beam size 2). Both were written by
``PYTHONPATH=<checkout of 89373c1> python tests/data/make_old_checkpoint.py tests/data``."""

import json
from pathlib import Path

import pytest
import torch

from captioning.module import load_checkpoint

DATA = Path(__file__).resolve().parent / "data"


def moment(weights: torch.Tensor) -> float:
    """As tests/data/make_old_checkpoint.py computes it: sum of w * position over the last dimension."""
    return float((weights * torch.linspace(0, 1, weights.shape[-1])).sum())


def test_a_checkpoint_of_commit_89373c1_loads_and_decodes_as_it_did():
    expected = json.loads((DATA / "sca_89373c1.json").read_text())
    module = load_checkpoint(DATA / "sca_89373c1.ckpt")
    assert module.hparams.decoder.attention == "sca" and module.hparams.beam_size == 2
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
