"""Self-critical sequence training: sampling with exact log-probabilities and gradients, baselines, CIDEr-D rewards
with training document frequencies, and an SCST run started from a cross-entropy checkpoint."""

import csv

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, tiny_module

from captioning.config import run_config
from captioning.data.shapes import generate_shapes
from captioning.metrics.cider import CiderD
from captioning.scst import CiderReward, SelfCritical, advantages, sample_captions, scst_loss


def test_samples_carry_the_models_log_probabilities_and_gradients():
    module = tiny_module()
    module.captioner.eval()  # no dropout: teacher forcing must see the same model
    images = torch.randn(2, 3, 64, 64)
    torch.manual_seed(3)
    samples = sample_captions(module.captioner, images, samples=4, bos=1, eos=2, max_len=5, suppress=(0, 1))
    rows, steps = samples.tokens.shape
    assert rows == 8 and steps <= 6
    ended = (samples.tokens == 2).float().cumsum(1)
    assert torch.equal(samples.mask, (ended - (samples.tokens == 2).float() == 0).float())  # words + first <eos>
    assert (samples.tokens[:, -1] == 2).all()  # every sample ends, at max_len at the latest
    # the same log-probabilities as teacher forcing the sampled tokens
    inputs = torch.cat([torch.ones(rows, 1, dtype=torch.long), samples.tokens[:, :-1]], dim=1)  # (8, T)
    logits, _ = module.captioner(images, inputs)  # (8, T, V), each image's memory repeated 4 times
    logits[..., :2] = float("-inf")  # the suppressed <pad>, <bos>
    expected = F.log_softmax(logits, -1).gather(2, samples.tokens[..., None]).squeeze(2) * samples.mask
    torch.testing.assert_close(samples.log_probs, expected)
    scst_loss(samples, torch.randn(2, 4)).backward()
    assert all(p.grad is not None for p in module.captioner.encoder.parameters() if p.requires_grad)


def test_baselines():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])
    torch.testing.assert_close(
        advantages(rewards, baseline="greedy", greedy_rewards=torch.tensor([2.0, 1.0])),
        torch.tensor([[-1.0, 0.0, 1.0], [-1.0, -1.0, 2.0]]),
    )
    torch.testing.assert_close(
        advantages(rewards, baseline="mean", greedy_rewards=None), torch.tensor([[-1.5, 0.0, 1.5], [-1.5, -1.5, 3.0]])
    )
    with pytest.raises(ValueError, match="2 samples"):
        advantages(rewards[:, :1], baseline="mean", greedy_rewards=None)


def test_rewards_use_training_document_frequencies():
    corpus = {
        1: ["a red circle", "a red ball", "one red circle"],
        2: ["a blue square", "a blue box", "two blue squares"],
        3: ["a green star", "one green star", "a star"],
    }
    reward = CiderReward(corpus)
    scores = reward([1, 2], ["a red circle", "a green star", "a blue square", "a red circle"])  # (2, 2)
    assert scores.shape == (2, 2) and scores[0, 0] > scores[0, 1] and scores[1, 0] > scores[1, 1]
    expected = CiderD(corpus).score({0: "a red circle"}, {0: corpus[1]})[1][0]
    assert float(scores[0, 0]) == pytest.approx(expected)
    # with the split's own document frequencies (one image: every n-gram in every document) the score would be 0
    assert CiderD().score({0: "a red circle"}, {0: corpus[1]})[1][0] == 0.0


def test_scst_run_starts_from_a_cross_entropy_checkpoint(tmp_path):
    shapes = tmp_path / "shapes"
    generate_shapes(shapes, train=48, val=8, test=7, seed=4, image_size=64, show_progress=False)
    base = ["fit", "--config", str(ROOT / "configs/smoke.yaml"), "--data.root", str(shapes)]
    xe = run_config([*base, "--checkpoint.dirpath", str(tmp_path / "xe"), "--trainer.default_root_dir", str(tmp_path)])
    start = tmp_path / "xe" / "best.ckpt"
    args = ["--config", str(ROOT / "configs/scst.yaml"), "--model.init_weights", str(start)]
    args += ["--model.scst.samples", "3", "--trainer.max_epochs", "1", "--trainer.logger", "CSVLogger"]
    args += ["--trainer.logger.save_dir", str(tmp_path / "logs"), "--checkpoint.dirpath", str(tmp_path / "scst")]
    scst = run_config([*base, *args])
    assert scst.model.scst_spec == SelfCritical(samples=3, baseline="greedy") and scst.trainer.global_step == 6
    rows = list(csv.DictReader(next((tmp_path / "logs").rglob("metrics.csv")).open()))
    rewards = [float(r["train/reward"]) for r in rows if r.get("train/reward")]
    assert len(rewards) == 6 and all(r >= 0 for r in rewards)
    assert any(r.get("val/CIDEr") for r in rows)
    before = xe.model.state_dict()  # the run started from these weights and moved them
    moved = [name for name, value in scst.model.state_dict().items() if not torch.equal(value, before[name])]
    assert any(name.startswith("captioner.decoder") for name in moved)
