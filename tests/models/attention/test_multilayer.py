"""Multi-layer SCA-CNN with per-step recomputation (REFERENCE.md section 2): the recompute path is the backbone's
own computation, samples are independent, gradients reach every attention parameter, orders differ."""

import pytest
import torch
import torch.nn.functional as F
from sca_helpers import assert_each_sample_independent, make_uniform, with_random_bn_statistics

from captioning.models.attention.multilayer import MultiLayerSCA
from captioning.models.encoder import ResNetEncoder

D = 6


def _setup(depth: int, layers=(), order: str = "cs"):
    torch.manual_seed(0)
    encoder = with_random_bn_statistics(ResNetEncoder(depth, attention="cbam", width=16).eval())
    sca = MultiLayerSCA(encoder, hidden_dim=D, attn_dim=5, order=order, layers=layers).eval()
    return encoder, sca


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("layers", [(), "all", "top"])
@pytest.mark.parametrize("order", ["cs", "sc", "c", "s"])
def test_uniform_attention_recomputes_the_plain_layer4(depth, layers, order):
    encoder, _ = _setup(depth)
    names = encoder.level_names()
    chosen = {(): (), "all": names, "top": names[-1:]}[layers]
    encoder, sca = _setup(depth, chosen, order)
    make_uniform(sca)
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        memory = sca.prepare(encoder, images)
        context, weights = sca(memory, torch.randn(3, D), encoder)
        plain = encoder(images)  # (B, C, h, w): torchvision's own layer4 forward
    torch.testing.assert_close(context, F.normalize(plain.mean(dim=(2, 3)), dim=1) * plain.shape[1] ** 0.5)
    torch.testing.assert_close(memory["pooled"], F.normalize(plain.mean(dim=(2, 3)), dim=1) * plain.shape[1] ** 0.5)
    assert len([n for n in weights if n.startswith(("alpha", "beta"))]) == len(sca.levels) * len(order)


def test_official_layers_and_shapes_for_resnet50():
    encoder, sca = _setup(50)
    assert sca.names == ["layer4.2.conv2", "layer4"]  # res5c_branch2b and res5c
    memory = sca.prepare(encoder, torch.randn(2, 3, 64, 64))
    context, weights = sca(memory, torch.randn(2, D), encoder)
    assert context.shape == (2, encoder.out_channels)
    assert weights["beta.layer4.2.conv2"].shape == (2, 128) and weights["beta.layer4"].shape == (2, 512)
    for name, w in weights.items():
        torch.testing.assert_close(w.sum(dim=1), torch.ones(2))  # alphas over locations, betas over channels
        assert (w >= 0).all(), name


def test_each_sample_is_independent_of_its_batch():
    encoder, sca = _setup(50, ("layer4.2.conv1", "layer4.2.conv2", "layer4"))
    images, hidden = torch.randn(4, 3, 64, 64), torch.randn(4, D)
    assert_each_sample_independent(encoder, sca, images, hidden)


def test_steps_do_not_compound_and_the_hidden_state_matters():
    encoder, sca = _setup(18)
    memory = sca.prepare(encoder, torch.randn(2, 3, 64, 64))
    cached = {k: v.clone() for k, v in memory.items()}
    hidden = torch.randn(2, D)
    first, _ = sca(memory, hidden, encoder)
    second, _ = sca(memory, hidden, encoder)
    torch.testing.assert_close(first, second)  # the same step twice: same result, memory untouched
    assert all(torch.equal(memory[k], cached[k]) for k in memory)
    other, _ = sca(memory, torch.randn(2, D) * 3, encoder)
    assert not torch.allclose(first, other)


def test_gradients_reach_every_attention_parameter_and_the_backbone():
    encoder, sca = _setup(50, ("layer4.2.conv1", "layer4.2.conv2", "layer4"))
    encoder.train()
    sca.train()
    memory = sca.prepare(encoder, torch.randn(2, 3, 64, 64))
    context, weights = sca(memory, torch.randn(2, D, requires_grad=True), encoder)
    (context.pow(2).sum() + sum(w.pow(2).sum() for w in weights.values())).backward()
    for name, p in sca.named_parameters():
        assert p.grad is not None, name
        if not name.endswith("score.bias"):  # a bias before a softmax shifts every logit alike: its gradient is 0
            assert p.grad.abs().sum() > 0, name
    assert encoder.backbone.layer4[-1].conv3.weight.grad.abs().sum() > 0  # the recomputed conv trains
    assert encoder.backbone.layer1[0].conv1.weight.grad.abs().sum() > 0


def test_channel_spatial_and_spatial_channel_orders_differ():
    encoder, cs = _setup(18, order="cs")
    _, sc = _setup(18, order="sc")
    sc.load_state_dict(cs.state_dict())  # same parameters, only the order differs
    images, hidden = torch.randn(2, 3, 64, 64), torch.randn(2, D)
    with torch.no_grad():
        a, _ = cs(cs.prepare(encoder, images), hidden, encoder)
        b, _ = sc(sc.prepare(encoder, images), hidden, encoder)
    assert not torch.allclose(a, b)


def test_unknown_layers_are_refused():
    encoder = ResNetEncoder(18, width=8)
    with pytest.raises(ValueError, match="SCA layers"):
        MultiLayerSCA(encoder, hidden_dim=D, attn_dim=4, layers=("layer3",))


def test_training_updates_the_last_blocks_bn_statistics_once_per_image_not_per_word():
    """The un-attended pass trains the last block's BN like any other; the per-word lifts leave it alone."""
    encoder, sca = _setup(18)
    encoder.train()
    block = encoder.backbone.layer4[-1]
    images = torch.randn(4, 3, 64, 64)
    before = block.bn2.running_mean.clone()
    memory = sca.prepare(encoder, images)
    after_prepare = block.bn2.running_mean.clone()
    assert not torch.equal(before, after_prepare)  # updated by the once-per-image pass
    plain = encoder.backbone.layer4(
        encoder.backbone.layer3(
            encoder.backbone.layer2(
                encoder.backbone.layer1(
                    encoder.backbone.maxpool(
                        encoder.backbone.relu(encoder.backbone.bn1(encoder.backbone.conv1(images)))
                    )
                )
            )
        )
    )
    pooled = F.normalize(plain.mean(dim=(2, 3)), dim=1) * plain.shape[1] ** 0.5
    torch.testing.assert_close(memory["pooled"], pooled)  # training mode: the backbone's own BN, batch statistics
    statistics = {name: value.clone() for name, value in block.named_buffers()}  # CBAM's spatial-gate BN too
    assert "attention.spatial.bn.running_var" in statistics
    sca(memory, torch.randn(4, D), encoder)  # one word
    for name, value in block.named_buffers():  # lifts use, never move, the statistics
        torch.testing.assert_close(value, statistics[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("depth", [18, 50])
def test_rows_of_a_word_are_independent_while_training(depth):
    """In training mode too, a row's recomputed layers never see the other rows (no BN batch statistics in the
    lifts: the block's BNs and its CBAM spatial gate's BN use their running statistics)."""
    encoder, sca = _setup(depth)
    spatial_bn = encoder.backbone.layer4[-1].attention.spatial.bn
    torch.nn.init.ones_(spatial_bn.weight)  # zero-initialized, the gate would ignore its statistics
    images, hidden = torch.randn(4, 3, 64, 64), torch.randn(4, D)
    with torch.no_grad():
        memory = sca.prepare(encoder, images)  # eval mode: per image
        encoder.train()
        sca.train()
        batched, weights = sca(memory, hidden, encoder)
        for i in range(4):
            alone, single = sca({k: v[i : i + 1] for k, v in memory.items()}, hidden[i : i + 1], encoder)
            torch.testing.assert_close(batched[i : i + 1], alone)
            for name in weights:
                torch.testing.assert_close(weights[name][i : i + 1], single[name])
    assert spatial_bn.training  # the lift put the module's mode back
