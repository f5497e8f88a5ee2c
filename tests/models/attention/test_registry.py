"""The attention contract: a new attention is one file and one line. A toy decoder attention and a toy backbone
attention are defined here, registered with one line each, and trained a step; the loss, beam search, the figures
and grounding read their weights through the same contract as the built-in ones."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import tiny_batch, tiny_module
from torch import nn

from captioning.checkpoints import load_checkpoint
from captioning.data.records import Box
from captioning.data.synonyms import SHAPES_WORDS
from captioning.errors import ConfigError
from captioning.metrics.grounding import GroundingTarget, ground_caption, summarize
from captioning.models.attention.registry import DECODER_ATTENTIONS
from captioning.models.attention.weights import FINAL_MAP, AttentionWeights
from captioning.models.captioner import DecoderSpec, EncoderSpec
from captioning.models.cbam import BACKBONE_ATTENTIONS
from captioning.models.encoder import Encoder
from captioning.module import CrossEntropy
from captioning.viz.figures import split_generation


class DotAttention(nn.Module):
    """Dot-product attention over the final map (Luong et al. 2015, "general"): e_i = (W_a a_i) . (W_h h_{t-1})."""

    def __init__(self, encoder: Encoder, *, hidden_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(encoder.out_channels, attn_dim)
        self.hidden_proj = nn.Linear(hidden_dim, attn_dim)

    def features(self, encoder: Encoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"map": encoder(images)}  # (B, C, h, w)

    def from_features(self, encoder: Encoder, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        grid = features["map"].flatten(2).transpose(1, 2)  # (B, N, C)
        return {"grid": grid, "keys": self.feature_proj(grid), "pooled": grid.mean(dim=1)}

    def prepare(self, encoder: Encoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.from_features(encoder, self.features(encoder, images))

    def forward(self, memory, hidden, encoder):
        scores = torch.einsum("bna,ba->bn", memory["keys"], self.hidden_proj(hidden))  # (B, N)
        alphas = scores.softmax(dim=1)
        context = torch.einsum("bn,bnc->bc", alphas, memory["grid"])  # (B, C)
        return context, AttentionWeights(spatial={"layer4": alphas}).flat()


class ChannelScale(nn.Module):
    """A learnt positive scale per channel (softplus), as a backbone attention; exactly 1 with ``identity_init``."""

    def __init__(self, channels: int, *, reduction: int, identity_init: bool) -> None:
        super().__init__()
        start = float(np.log(np.expm1(1.0))) if identity_init else 0.0  # softplus(start) = 1 or log 2
        self.raw = nn.Parameter(torch.full((channels,), start))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.softplus(self.raw)[None, :, None, None]  # (B, C, H, W)


@pytest.fixture
def dot(monkeypatch):
    monkeypatch.setitem(DECODER_ATTENTIONS, "dot", DotAttention)  # the one line (undone after the test)


def test_a_registered_decoder_attention_trains_decodes_draws_and_grounds(dot, tmp_path):
    module = tiny_module("dot", loss=CrossEntropy(attention_reg=1.0))
    batch = tiny_batch(4)
    before = {n: p.detach().clone() for n, p in module.named_parameters() if "decoder.attention." in n}
    losses = module.loss(batch)
    assert losses["attention_reg"] > 0  # the doubly stochastic term reads the toy's maps: not yet uniform over words
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses["loss"].backward()
    optimizer.step()
    assert before and all(not torch.equal(p, before[n]) for n, p in module.named_parameters() if n in before)

    captions, generation = module.generate(batch.images, beam_size=2)  # beam search carries the weights by name
    assert set(generation.attention) == {"alpha.layer4"}
    maps = generation.attention["alpha.layer4"]  # (B, T, N): 64 px / 32 = 2 x 2 locations
    assert maps.shape[::2] == (4, 4) and torch.allclose(maps[:, 0].sum(-1), torch.ones(4))

    pixels = np.zeros((4, 64, 64, 3), np.uint8)
    item = split_generation(captions, generation, pixels)[0]
    assert list(item.spatial) == ["layer4"] and item.channel == {}  # the figures' view
    words = ["a", "red", "circle"]
    attention = {"alpha.layer4": torch.tensor([[1.0, 0, 0, 0]] * 3)}  # every word on the top-left cell
    target = GroundingTarget(64, 64, (Box(0, 0, 32, 32, "circle"),))
    grounded = ground_caption(words, attention, target, synonyms=SHAPES_WORDS)
    assert list(grounded.layers) == ["layer4"] and grounded.layers["layer4"].hits == 1
    assert summarize({1: grounded})["pointing.layer4"] == 1.0

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path / "dot.ckpt"
    trainer.save_checkpoint(path)  # as fit saves them
    loaded = load_checkpoint(path)  # the name travels in the checkpoint; the registry builds it again
    assert isinstance(loaded.captioner.decoder.attention, DotAttention)
    assert loaded.generate(batch.images)[0] == module.generate(batch.images)[0]


def test_a_registered_backbone_attention_sits_in_every_block_and_trains(monkeypatch):
    monkeypatch.setitem(BACKBONE_ATTENTIONS, "scale", ChannelScale)  # the one line
    module = tiny_module(encoder={"attention": "scale"})
    gates = [m for n, m in module.captioner.encoder.named_modules() if n.endswith(".attention")]
    assert len(gates) == 8 and all(isinstance(g, ChannelScale) for g in gates)  # ResNet-18: 8 blocks
    module.loss(tiny_batch())["loss"].backward()
    assert all(g.raw.grad is not None and g.raw.grad.abs().sum() > 0 for g in gates)


def test_the_weights_dataclass_round_trips_the_names_the_decoder_carries():
    spatial, channel = torch.rand(2, 4), torch.rand(2, 8)
    flat = AttentionWeights(spatial={"layer4.1.conv1": spatial, "layer4": spatial}, channel={"layer4": channel}).flat()
    assert list(flat) == ["alpha.layer4.1.conv1", "alpha.layer4", "beta.layer4"]
    back = AttentionWeights.of(flat)
    assert list(back.spatial) == ["layer4.1.conv1", "layer4"] and back.channel["layer4"] is channel
    assert AttentionWeights(spatial={FINAL_MAP: spatial}).flat() == {"alpha": spatial}  # soft attention's one map
    assert AttentionWeights.of({"alpha": spatial}).spatial == {FINAL_MAP: spatial}
    with pytest.raises(ValueError, match=r"'gamma\.layer4'"):
        AttentionWeights.of({"gamma.layer4": spatial})


def test_an_unregistered_attention_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"decoder attention must be one of \['none', 'sca', 'soft'\], got 'dot'"):
        DecoderSpec(attention="dot")
    with pytest.raises(ConfigError, match=r"encoder attention must be one of \['cbam', 'none', 'se'\], got 'eca'"):
        EncoderSpec(attention="eca")
