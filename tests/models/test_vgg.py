"""VGG backbones (arXiv 1409.1556) and SCA-CNN-VGG (arXiv 1611.05594; REFERENCE.md section 2): torchvision's exact
layout, the conv5 levels, the per-step recomputation, a captioner that trains and decodes, the encoder selector."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import tiny_batch, tiny_module
from sca_helpers import assert_each_sample_independent, make_uniform, with_random_bn_statistics
from torchvision.models.vgg import cfgs, make_layers

from captioning.errors import CaptioningError
from captioning.models.attention.multilayer import MultiLayerSCA
from captioning.models.backbones import VGG, load_imagenet_weights
from captioning.models.captioner import EncoderSpec
from captioning.models.encoder import VGGEncoder
from captioning.module import CaptioningModule

D = 6
# torchvision's vgg16 / vgg19 / vgg16_bn / vgg19_bn with the 1000-class head: (whole network, ``features``)
PARAMS = {
    (16, False): (138_357_544, 14_714_688),
    (19, False): (143_667_240, 20_024_384),
    (16, True): (138_365_992, 14_723_136),
    (19, True): (143_678_248, 20_035_392),
}


def _torchvision_vgg(depth: int, batch_norm: bool) -> torch.nn.Module:
    return getattr(torchvision.models, f"vgg{depth}{'_bn' if batch_norm else ''}")(weights=None)


@pytest.mark.parametrize(("depth", "batch_norm"), sorted(PARAMS))
def test_parameter_counts_and_keys_match_torchvision(depth, batch_norm):
    with torch.device("meta"):  # shapes only: no 138M-parameter initialization
        ours, theirs = VGG(depth, batch_norm=batch_norm), _torchvision_vgg(depth, batch_norm)
        encoder = VGGEncoder(depth, batch_norm=batch_norm)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert (count(ours), count(ours.features)) == (count(theirs), count(theirs.features)) == PARAMS[depth, batch_norm]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert count(encoder) == PARAMS[depth, batch_norm][1]  # the encoder keeps all of ``features``, nothing else
    features = {f"backbone.{k}" for k in theirs.state_dict() if k.startswith("features.")}
    assert set(encoder.state_dict()) == features


@pytest.mark.parametrize(("depth", "batch_norm"), [(16, False), (19, True)])
def test_encoder_maps_are_torchvisions_conv5_outputs(depth, batch_norm):
    torch.manual_seed(0)
    encoder = VGGEncoder(depth, batch_norm=batch_norm).eval()  # width 64
    plain = make_layers(cfgs[{16: "D", 19: "E"}[depth]], batch_norm=batch_norm).eval()  # torchvision's ``features``
    plain.load_state_dict({k.removeprefix("backbone.features."): v for k, v in encoder.state_dict().items()})
    for module in plain.modules():  # non-trivial BN statistics: the encoder's lifted layers use them frozen
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    encoder.load_state_dict({f"backbone.features.{k}": v for k, v in plain.state_dict().items()})
    images = torch.randn(1, 3, 32, 32)
    relus = [i for i, layer in enumerate(plain) if isinstance(layer, torch.nn.ReLU)][-3:]  # after the last 3 convs
    with torch.no_grad():
        levels = encoder.encode_levels(images)
        for level, relu in zip(levels, relus, strict=True):
            torch.testing.assert_close(level, plain[: relu + 1](images))
        torch.testing.assert_close(encoder(images), plain[:-1](images))  # before the last max-pool: H/16
    assert levels[2].shape == (1, 512, 2, 2)
    assert (
        encoder.level_names() == {16: ("conv5_1", "conv5_2", "conv5_3"), 19: ("conv5_2", "conv5_3", "conv5_4")}[depth]
    )


def _setup(depth: int, layers=(), order: str = "cs", *, batch_norm: bool = False):
    torch.manual_seed(0)
    encoder = with_random_bn_statistics(VGGEncoder(depth, batch_norm=batch_norm, width=4).eval())
    sca = MultiLayerSCA(encoder, hidden_dim=D, attn_dim=5, order=order, layers=layers).eval()
    return encoder, sca


@pytest.mark.parametrize(("depth", "batch_norm"), [(16, False), (19, True)])
@pytest.mark.parametrize("layers", [(), "all", "top"])
@pytest.mark.parametrize("order", ["cs", "sc", "c", "s"])
def test_uniform_attention_recomputes_the_plain_conv5(depth, batch_norm, layers, order):
    encoder, _ = _setup(depth, batch_norm=batch_norm)
    names = encoder.level_names()
    chosen = {(): (), "all": names, "top": names[-1:]}[layers]
    encoder, sca = _setup(depth, chosen, order, batch_norm=batch_norm)
    make_uniform(sca)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        memory = sca.prepare(encoder, images)
        context, weights = sca(memory, torch.randn(3, D), encoder)
        plain = encoder(images)  # (B, C, h, w): torchvision's own ``features`` forward up to the last conv
    torch.testing.assert_close(context, F.normalize(plain.mean(dim=(2, 3)), dim=1) * plain.shape[1] ** 0.5)
    torch.testing.assert_close(memory["pooled"], F.normalize(plain.mean(dim=(2, 3)), dim=1) * plain.shape[1] ** 0.5)
    assert len([n for n in weights if n.startswith(("alpha", "beta"))]) == len(sca.levels) * len(order)


def test_official_layers_and_shapes_for_vgg19():
    encoder, sca = _setup(19)
    assert sca.names == ["conv5_3", "conv5_4"]  # the official code's VGG-19 pair
    memory = sca.prepare(encoder, torch.randn(2, 3, 64, 64))
    context, weights = sca(memory, torch.randn(2, D), encoder)
    assert context.shape == (2, 32)
    assert weights["alpha.conv5_3"].shape == (2, 16) and weights["beta.conv5_4"].shape == (2, 32)  # 64 px / 16 = 4
    for name, w in weights.items():
        torch.testing.assert_close(w.sum(dim=1), torch.ones(2))
        assert (w >= 0).all(), name


def test_each_sample_is_independent_of_its_batch():
    encoder, sca = _setup(19, ("conv5_2", "conv5_3", "conv5_4"), batch_norm=True)
    images, hidden = torch.randn(4, 3, 32, 32), torch.randn(4, D)
    assert_each_sample_independent(encoder, sca, images, hidden)


def _vgg_module(**encoder) -> CaptioningModule:
    return tiny_module("sca", encoder={"arch": "vgg", "depth": 16, "width": 4, "attention": "none"} | encoder)


def test_vgg_sca_captioner_trains_one_step_and_decodes():
    module = _vgg_module()
    assert isinstance(module.captioner.encoder, VGGEncoder)
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.01)
    batch = tiny_batch(4)
    before = module.loss(batch)["loss"]
    before.backward()
    attention = {n: p for n, p in module.named_parameters() if n.startswith("captioner.decoder.attention.")}
    assert attention and all(p.grad is not None and torch.isfinite(p.grad).all() for p in attention.values())
    assert all(p.grad.abs().sum() > 0 for n, p in attention.items() if not n.endswith("score.bias"))
    assert module.captioner.encoder.backbone.features[28].weight.grad.abs().sum() > 0  # conv5_3: recomputed, trains
    assert module.captioner.encoder.backbone.features[0].weight.grad.abs().sum() > 0
    optimizer.step()
    assert module.loss(batch)["loss"] < before
    module.eval()
    captions, generation = module.generate(batch.images, beam_size=2)
    assert len(captions) == 4 and all(isinstance(c, str) for c in captions)
    assert set(generation.attention) >= {"alpha.conv5_2", "alpha.conv5_3", "beta.conv5_2", "beta.conv5_3"}


def test_frozen_vgg_keeps_its_parameters_and_bn_statistics():
    module = _vgg_module(arch="vgg_bn", trainable=False).train()
    encoder = module.captioner.encoder
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.backbone.training
    module.loss(tiny_batch())["loss"].backward()
    assert all(
        torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
        for m in encoder.modules()
        if hasattr(m, "running_mean")
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"arch": "vgg", "depth": 18}, "depth must be one of \\[16, 19\\] for arch vgg"),
        ({"arch": "vgg_bn", "depth": 50}, "for arch vgg_bn"),
        ({"arch": "resnet", "depth": 19}, "for arch resnet"),
        ({"arch": "vgg", "depth": 19, "attention": "cbam"}, "no backbone attention"),
    ],
)
def test_bad_arch_depth_attention_combinations_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        EncoderSpec(**spec)


def test_bad_vgg_arguments_are_refused():
    with pytest.raises(ValueError, match="VGG depth"):
        VGGEncoder(11)
    with pytest.raises(ValueError, match="width"):
        VGG(16, width=0)
    encoder = VGGEncoder(16, width=2)
    with pytest.raises(ValueError, match="level"):
        encoder.lift(torch.zeros(1, 16, 2, 2), 2, block_input=torch.zeros(1, 16, 2, 2))


def test_checkpoints_from_before_arch_load_as_resnet(tmp_path):
    old = EncoderSpec(depth=50, attention="cbam")
    del old.__dict__["arch"]  # what an EncoderSpec pickled before ``arch`` existed holds
    torch.save({"encoder": old}, tmp_path / "old.pt")
    with torch.serialization.safe_globals([EncoderSpec]):
        loaded = torch.load(tmp_path / "old.pt", weights_only=True)["encoder"]
    assert loaded.arch == "resnet" and loaded == EncoderSpec(depth=50, attention="cbam")


def test_imagenet_weights_without_internet_fail_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: the weights must be downloaded
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    for batch_norm, name in ((False, "vgg19-"), (True, "vgg19_bn-")):
        with torch.device("meta"), pytest.raises(CaptioningError) as error:
            VGGEncoder(19, batch_norm=batch_norm, weights="IMAGENET1K_V1")
        assert "\n" not in str(error.value) and name in str(error.value) and "weights: null" in str(error.value)
    with torch.device("meta"), pytest.raises(CaptioningError, match=r"VGG16_Weights\.IMAGENET1K_V9"):
        VGGEncoder(16, weights="IMAGENET1K_V9")


@pytest.mark.parametrize(("depth", "batch_norm"), [(16, False), (19, True)])
def test_imagenet_weights_load_every_tensor(monkeypatch, depth, batch_norm):
    import torchvision.models._api as api

    with torch.device("meta"):  # keys and shapes only
        reference = _torchvision_vgg(depth, batch_norm).state_dict()
        monkeypatch.setattr(api, "load_state_dict_from_url", lambda *a, **k: reference)
        assert load_imagenet_weights(VGG(depth, batch_norm=batch_norm), depth, "IMAGENET1K_V1") == []
        headless = VGG(depth, batch_norm=batch_norm, num_classes=None)  # the encoder's: the classifier is skipped
        assert load_imagenet_weights(headless, depth, "IMAGENET1K_V1") == []
