"""Inference entry points switch the model to eval and inference mode themselves and put its train/eval flags back:
beam search and greedy decoding, ``generate``, ``caption_images`` and the backbone gates of the visualizations."""

import numpy as np
import pytest
import torch
from conftest import tiny_module
from PIL import Image

from captioning.decoding import DecodingSpec, beam_search, greedy
from captioning.models.modes import inference
from captioning.module import CaptioningModule
from captioning.viz.gates import backbone_gates
from captioning.workflows import caption_images

BOS, EOS = 1, 2


def dropout_module() -> CaptioningModule:
    """A tiny model with dropout and BatchNorm, whose train mode changes every output."""
    module = tiny_module("sca", decoder={"dropout": 0.5}, decoding=DecodingSpec(max_len=6, beam_size=3))
    with torch.no_grad():  # a peaky output layer: captions of several words that dropout would change
        module.captioner.decoder.output.weight.mul_(8.0)
    return module


def images(batch_size: int = 4) -> torch.Tensor:
    return torch.randn(batch_size, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def flags(module: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in module.named_modules()}


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}  # BN running statistics included


def assert_same_state(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)


def in_training(module: CaptioningModule) -> dict[str, bool]:
    """Train mode as a run holds it mid-training: the backbone's ``layer1`` frozen (eval), everything else training."""
    module.train()
    module.captioner.encoder.backbone.layer1.eval()
    before = flags(module)
    assert before["captioner.decoder"] and not before["captioner.encoder.backbone.layer1"]
    return before


def test_train_mode_really_changes_the_outputs():
    module = dropout_module().train()
    memory = module.captioner.encode(images())
    logits = [module.captioner.step(torch.full((4,), BOS), module.captioner.init_state(memory), memory)[0]]
    logits.append(module.captioner.step(torch.full((4,), BOS), module.captioner.init_state(memory), memory)[0])
    assert not torch.allclose(logits[0], logits[1])  # dropout draws differ: this test's model is not dropout-free


@pytest.mark.parametrize("beam_size", [1, 3])
def test_beam_search_in_train_mode_equals_eval_mode_and_leaves_train_mode(beam_size):
    module = dropout_module()
    captioner = module.captioner.eval()
    expected = beam_search(captioner, images(), bos=BOS, eos=EOS, max_len=6, beam_size=beam_size)
    before = in_training(module)
    weights = state(module)
    got = beam_search(captioner, images(), bos=BOS, eos=EOS, max_len=6, beam_size=beam_size)
    assert torch.equal(got.nbest_tokens, expected.nbest_tokens)
    torch.testing.assert_close(got.nbest_scores, expected.nbest_scores, rtol=0, atol=0)
    assert flags(module) == before
    assert_same_state(module, weights)  # train-mode BN would have moved its running statistics
    assert got.nbest_tokens.shape[-1] > 2  # captions of a few words: dropout would have had words to change
    if beam_size == 1:
        assert torch.equal(greedy(captioner, images(), bos=BOS, eos=EOS, max_len=6).tokens, expected.tokens)
        assert flags(module) == before


def test_generate_and_caption_images_in_train_mode_equal_eval_mode_and_leave_train_mode(tmp_path):
    module = dropout_module().eval()
    paths = []
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 52, 3), dtype=np.uint8)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    expected_captions, _ = module.generate(images())
    expected = caption_images(module, paths, batch_size=2)
    before = in_training(module)
    weights = state(module)
    assert module.generate(images())[0] == expected_captions
    got = caption_images(module, paths, batch_size=2)
    assert [item.caption for item in got] == [item.caption for item in expected]
    for item, reference in zip(got, expected, strict=True):
        for name, weights_of_word in reference.attention.items():
            torch.testing.assert_close(item.attention[name], weights_of_word, rtol=0, atol=0)
    assert flags(module) == before
    assert_same_state(module, weights)
    assert not torch.is_inference_mode_enabled()


def test_backbone_gates_in_train_mode_equal_eval_mode_and_leave_train_mode():
    module = dropout_module().eval()
    encoder = module.captioner.encoder
    expected = backbone_gates(encoder, images(), ["layer1.0", "layer4.1"])
    before = in_training(module)
    weights = state(module)
    got = backbone_gates(encoder, images(), ["layer1.0", "layer4.1"])
    for name, gates in expected.items():
        torch.testing.assert_close(got[name].channel, gates.channel, rtol=0, atol=0)
        torch.testing.assert_close(got[name].spatial, gates.spatial, rtol=0, atol=0)
    assert flags(module) == before
    assert_same_state(module, weights)


def test_inference_puts_every_flag_back_also_after_an_error():
    module = dropout_module()
    before = in_training(module)
    with pytest.raises(RuntimeError, match="inside"), inference(module) as running:
        assert running is module and not any(flags(module).values())
        assert torch.is_inference_mode_enabled()
        raise RuntimeError("inside")
    assert flags(module) == before and not torch.is_inference_mode_enabled()
    module.eval()
    with inference(module):
        pass
    assert not any(flags(module).values())  # a model in eval mode stays in it
