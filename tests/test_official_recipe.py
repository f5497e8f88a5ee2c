"""The official SCA-CNN recipe's pieces: the deep output layer, the zero first input, a frozen backbone that trains
only named modules (res5c_branch2c), Adadelta with the L2 term on the decoder only (zjuchenlong/sca-cnn.cvpr17)."""

import pytest
import torch
from conftest import tiny_batch, tiny_module

from captioning.errors import ConfigError
from captioning.models.encoder import ResNetEncoder
from captioning.module import CaptioningModule, OptimizationSpec


def _module(output: str = "deep", first_input: str = "zero", **kwargs) -> CaptioningModule:
    return tiny_module("sca", decoder={"output": output, "first_input": first_input}, **kwargs)


def test_deep_output_is_tanh_of_hidden_plus_previous_word_then_the_vocabulary_layer():
    decoder = _module().captioner.decoder
    hidden, words = torch.randn(3, 16), torch.randn(3, 8)
    expected = decoder.output.weight @ torch.tanh(decoder.deep.weight @ hidden.T + decoder.deep.bias[:, None] + words.T)
    torch.testing.assert_close(decoder.logits(hidden, words), expected.T + decoder.output.bias)
    assert decoder.output.in_features == 8  # W_o: E -> V, as the official prev2out layer


@pytest.mark.parametrize(("output", "first_input"), [("deep", "zero"), ("deep", "bos"), ("linear", "zero")])
def test_teacher_forcing_equals_the_step_by_step_decoder(output, first_input):
    """The packed output layer of teacher forcing gets each step's own input word, as ``step`` (decoding) does."""
    module = _module(output, first_input).eval()
    batch = tiny_batch(2)
    inputs = batch.tokens[:, :-1]
    with torch.no_grad():
        forced, _ = module.captioner(batch.images, inputs)  # (B, T, V)
        memory = module.captioner.encode(batch.images)
        state = module.captioner.init_state(memory)
        for t in range(inputs.shape[1]):
            logits, state, _ = module.captioner.step(inputs[:, t], state, memory)
            torch.testing.assert_close(forced[:, t], logits)


def test_zero_first_input_is_a_zero_embedding_that_never_trains():
    module = _module()
    embed = module.captioner.decoder.embed
    assert embed.weight[1].abs().sum() == 0  # <bos> = index 1
    module.loss(tiny_batch(2))["loss"].backward()
    assert embed.weight.grad[1].abs().sum() == 0 and embed.weight.grad[4:].abs().sum() > 0
    learnt = _module(first_input="bos").captioner.decoder.embed
    assert learnt.weight[1].abs().sum() > 0


def test_frozen_backbone_trains_only_the_named_modules_with_bn_fixed():
    spec = {"depth": 50, "attention": "none", "trainable": False, "train_modules": ("layer4.2.conv3",)}
    module = _module(encoder=spec)
    trained = {n for n, p in module.captioner.encoder.named_parameters() if p.requires_grad}
    assert trained == {"backbone.layer4.2.conv3.weight"}  # res5c_branch2c's weight (its conv has no bias)
    module.train()
    bn = module.captioner.encoder.backbone.layer4[2].bn3
    before = bn.running_mean.clone()
    module.loss(tiny_batch(2))["loss"].backward()
    torch.testing.assert_close(bn.running_mean, before)  # BN statistics stay fixed in a frozen backbone
    assert module.captioner.encoder.backbone.layer4[2].conv3.weight.grad.abs().sum() > 0
    assert module.captioner.encoder.backbone.layer4[2].conv2.weight.grad is None


def test_train_modules_are_refused_with_a_trainable_backbone_or_an_unknown_name():
    with pytest.raises(ConfigError, match="trainable false"):
        ResNetEncoder(18, width=8, train_modules=("layer4",))
    with pytest.raises(ConfigError, match="no module 'layer9'"):
        ResNetEncoder(18, width=8, trainable=False, train_modules=("layer9",))


def test_adadelta_puts_the_official_l2_term_on_the_decoder_only():
    module = _module(
        optimization=OptimizationSpec(optimizer="adadelta", lr=1.0, weight_decay=1e-4, lr_schedule="constant")
    )
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.Adadelta)
    decoder, cnn = optimizer.param_groups
    assert decoder["weight_decay"] == 2e-4 and cnn["weight_decay"] == 0.0  # d/dw of 1e-4 * w^2 is 2e-4 * w
    assert decoder["rho"] == 0.95 and decoder["lr"] == 1.0
    assert {id(p) for p in cnn["params"]} == {id(p) for p in module.captioner.encoder.parameters()}


def test_the_paper_three_layers_of_a_bottleneck_resnet_start_at_res5c_branch2a():
    encoder = ResNetEncoder(50, width=8)
    assert encoder.level_names() == ("layer4.2.conv1", "layer4.2.conv2", "layer4")
    assert encoder.level_channels() == (64, 64, 256)  # planes = 8 x width, output 4 x planes
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        block_input, (low, _, top) = encoder.eval().encode_block(images)
        block = encoder.backbone.layer4[2]
        torch.testing.assert_close(low, block.relu(block.bn1(block.conv1(block_input))))
        torch.testing.assert_close(top, encoder(images))
