"""Backbone attention: exact parameter counts (REFERENCE.md section 1), structure, shapes, ImageNet loading."""

import pytest
import torch
import torchvision

from captioning.errors import CaptioningError
from captioning.models.backbones import (
    AttentiveBasicBlock,
    AttentiveBottleneck,
    AttentiveResNet,
    cbam_resnet,
    load_imagenet_weights,
)
from captioning.models.cbam import CBAM, SE, SpatialAttention
from captioning.models.encoder import ResNetEncoder

# ../shared/REFERENCE.md section 1: torchvision v1.5 layout, 1000-class head, biased MLP r=16.
PARAMS = {
    18: (11_689_512, 11_778_592, 11_779_392),
    34: (21_797_672, 21_958_868, 21_960_468),
    50: (25_557_032, 28_088_024, 28_089_624),
    101: (44_549_160, 49_326_872, 49_330_172),
    152: (60_192_808, 66_821_848, 66_826_848),
}


@pytest.mark.parametrize("depth", sorted(PARAMS))
def test_parameter_counts_match_the_paper_layout(depth):
    counts = tuple(sum(p.numel() for p in cbam_resnet(depth, a).parameters()) for a in (None, "se", "cbam"))
    assert counts == PARAMS[depth]


@pytest.mark.parametrize("depth", [18, 50])
def test_every_block_holds_exactly_one_spatial_gate(depth):
    model = cbam_resnet(depth, "cbam")
    blocks = [m for m in model.modules() if isinstance(m, AttentiveBasicBlock | AttentiveBottleneck)]
    assert len(blocks) == {18: 8, 50: 16}[depth]
    for block in blocks:
        gates = [m for m in block.modules() if isinstance(m, SpatialAttention)]
        assert len(gates) == 1 and isinstance(block.attention, CBAM)
        assert gates[0].conv.weight.shape == (1, 2, 7, 7) and gates[0].conv.bias is None
        assert torch.all(gates[0].bn.weight == 0)  # official zero-init: every gate starts at 0.5
    assert all(isinstance(b.attention, SE) for b in cbam_resnet(depth, "se").modules() if hasattr(b, "attention"))


def test_plain_variant_has_torchvision_state_dict_keys():
    import torchvision

    assert cbam_resnet(50).state_dict().keys() == torchvision.models.resnet50().state_dict().keys()


@pytest.mark.parametrize("attention", [None, "se", "cbam"])
def test_small_width_forward_backward(attention):
    model = cbam_resnet(18, attention, num_classes=5, width=8)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_imagenet_weights_without_internet_fail_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: the weights must be downloaded
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(CaptioningError) as error:
        load_imagenet_weights(cbam_resnet(18, "cbam"), 18, "IMAGENET1K_V1")
    assert "\n" not in str(error.value) and "resnet18" in str(error.value) and "weights: null" in str(error.value)


def test_imagenet_weights_load_every_matching_tensor(monkeypatch, tmp_path):
    import torchvision
    import torchvision.models._api as api

    reference = torchvision.models.resnet18().state_dict()
    monkeypatch.setattr(api, "load_state_dict_from_url", lambda *a, **k: reference)
    model = cbam_resnet(18, "cbam")
    missing = load_imagenet_weights(model, 18, "IMAGENET1K_V1")
    assert missing and all(".attention." in name for name in missing)
    # per block: two MLP layers (weight, bias), the 7x7 conv, its BN's weight, bias, running mean and variance
    assert len(missing) == 8 * 9
    torch.testing.assert_close(model.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])


@pytest.mark.parametrize("depth", [18, 50])
def test_output_stride_16_is_torchvision_dilated_last_stage(depth):
    """output_stride 16 computes what torchvision's replace_stride_with_dilation=[False, False, True] computes
    (torchvision refuses dilation in basic blocks; the same convs with dilation 2 are checked against a dilated
    copy made by hand for ResNet-18)."""
    torch.manual_seed(0)
    encoder = ResNetEncoder(depth, output_stride=16, width=64).eval()
    if depth == 50:
        reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True])
    else:
        reference = torchvision.models.resnet18()
        for block in list(reference.layer4)[1:]:
            for conv in (block.conv1, block.conv2):
                conv.dilation, conv.padding = (2, 2), (2, 2)
        reference.layer4[0].conv1.stride = reference.layer4[0].downsample[0].stride = (1, 1)
    missing = reference.load_state_dict(encoder.backbone.state_dict(), strict=False).missing_keys
    assert missing == ["fc.weight", "fc.bias"]
    reference.eval()
    images = torch.randn(2, 3, 96, 96)
    stem = torch.nn.Sequential(*list(reference.children())[:-2])  # up to layer4
    with torch.no_grad():
        out = encoder(images)
        assert out.shape[-2:] == (6, 6)
        torch.testing.assert_close(out, stem(images))
        torch.testing.assert_close(encoder.encode_levels(images)[2], out)  # the SCA levels see the same network


def _torchvision_features(depth: int, state: dict) -> torch.nn.Module:
    """torchvision's own ResNet with ``state`` loaded, up to layer4 (the encoder's output)."""
    net = getattr(torchvision.models, f"resnet{depth}")()
    net.load_state_dict(state)
    return torch.nn.Sequential(*list(net.children())[:-2])


@pytest.mark.parametrize("attention", ["cbam", "se"])
@pytest.mark.parametrize("depth", [18, 50])
def test_gates_grafted_onto_pretrained_weights_start_as_the_identity(monkeypatch, attention, depth):
    import torchvision.models._api as api

    torch.manual_seed(0)
    reference = getattr(torchvision.models, f"resnet{depth}")().state_dict()  # stands in for the ImageNet file
    for name, tensor in reference.items():  # BN statistics as a trained network has them, not the init's 0 and 1
        if name.endswith("running_mean"):
            tensor.normal_(0, 0.1)
        elif name.endswith("running_var"):
            tensor.uniform_(0.5, 2.0)
    monkeypatch.setattr(api, "load_state_dict_from_url", lambda *a, **k: reference)
    encoder = ResNetEncoder(depth, attention=attention, weights="IMAGENET1K_V1")
    plain = _torchvision_features(depth, reference)
    images = torch.randn(2, 3, 64, 64)
    for train in (False, True):  # running statistics, and batch statistics as in the first training step
        encoder.train(train), plain.train(train)
        with torch.no_grad():
            torch.testing.assert_close(encoder(images), plain(images), atol=1e-5, rtol=1e-5)
    blocks = sum(len(encoder.backbone.get_submodule(stage)) for stage in ("layer1", "layer2", "layer3", "layer4"))
    assert len([m for m in encoder.modules() if isinstance(m, CBAM | SE)]) == blocks  # every block has its gate
    frozen = ResNetEncoder(depth, attention=attention, weights="IMAGENET1K_V1", trainable=False)
    gates = {name for name, _ in frozen.named_parameters() if ".attention." in name}
    assert {name for name, p in frozen.named_parameters() if p.requires_grad} == gates  # the new part trains


def test_gates_trained_from_scratch_keep_the_papers_form_and_counts():
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(SpatialAttention().gate(x), torch.full((2, 1, 5, 5), 0.5))  # sigmoid(0): CBAM code
    assert torch.all(CBAM(8, reduction=2).channel.gate(x) < 1) and torch.all(SE(8, reduction=2).gate(x) < 1)
    torch.testing.assert_close(CBAM(8, reduction=2, identity_init=True).channel.gate(x), torch.ones(2, 8))
    # the grafted form adds no parameter: the counts stay the papers'
    grafted = AttentiveResNet(50, attention="cbam", graft=True)
    assert sum(p.numel() for p in grafted.parameters()) == PARAMS[50][2]


@pytest.mark.parametrize("train_attention", [True, False])
def test_backbone_attention_trains_where_the_backbone_is_frozen_unless_told_not_to(train_attention):
    encoder = ResNetEncoder(18, attention="cbam", width=8, trainable=False, train_attention=train_attention)
    gates = {name for name, _ in encoder.named_parameters() if ".attention." in name}
    assert {name for name, p in encoder.named_parameters() if p.requires_grad} == (gates if train_attention else set())
    if train_attention:  # a training step reaches exactly the gates
        encoder.train()
        encoder(torch.randn(2, 3, 64, 64)).sum().backward()
        assert {name for name, p in encoder.named_parameters() if p.grad is not None} == gates
    # a stage frozen by the fine-tuning schedule keeps its gates trainable too
    schedule = ResNetEncoder(18, attention="cbam", width=8, train_attention=train_attention)
    schedule.set_frozen({"layer1"})
    frozen = {name for name, p in schedule.named_parameters() if name.startswith("backbone.layer1") and p.requires_grad}
    assert frozen == ({n for n in gates if n.startswith("backbone.layer1")} if train_attention else set())
