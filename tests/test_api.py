"""The Python API (``captioning.load(...).caption(...)``) on a model trained by ``captioning fit`` (the session's
``trained_run``): every input kind, attention per layer, train mode left alone, decoding overrides, one-line errors,
and the README's snippet run as written."""

import re
import socket
import time

import numpy as np
import pytest
import torch
from conftest import ROOT
from huggingface_hub import constants
from PIL import Image

import captioning
from captioning.api import Caption, CaptioningModel
from captioning.errors import CaptioningError


@pytest.fixture(scope="module")
def model(trained_run) -> CaptioningModel:
    return captioning.load(trained_run["ckpt"], device="cpu")


def test_paths_pil_images_arrays_and_tensors_give_the_same_caption(model, trained_run):
    path = trained_run["images"][0]
    picture = Image.open(path)
    array = np.asarray(picture.convert("RGB"))  # (H, W, 3) uint8
    tensor = torch.from_numpy(array).permute(2, 0, 1)  # (3, H, W) uint8
    inputs = [path, str(path), picture, array, tensor, tensor.float() / 255, array.astype(np.float32) / 255]
    results = model.caption(inputs, beam_size=2, batch_size=3)
    assert all(isinstance(r, Caption) for r in results) and len(results) == len(inputs)
    assert {r.caption for r in results} == {results[0].caption}
    # 1e-4: rows of other batches go through other float32 kernel blockings (observed: 2 ulps of a score of -60)
    np.testing.assert_allclose([r.score for r in results], results[0].score, atol=1e-4)
    (alone,) = model.caption(picture, beam_size=2)  # a single image is a batch of one
    assert alone.caption == results[0].caption and abs(alone.score - results[0].score) < 1e-4
    batch = model.caption(torch.stack([tensor, tensor]), beam_size=2)  # (B, 3, H, W)
    assert [r.caption for r in batch] == [results[0].caption] * 2

    # the check is not vacuous: another image scores differently
    other = model.caption(trained_run["images"][1], beam_size=2)[0]
    assert abs(other.score - results[0].score) > 1e-3


def test_attention_per_layer_spatial_maps_and_channel_weights(model, trained_run):
    results = model.caption(trained_run["images"][:2], attention=True, max_len=6)
    encoder_channels = {}
    for result in results:
        assert result.words[: len(result.caption.split())] == result.caption.split()
        steps = len(result.words)  # one attention row per generated token (<eos> included where reached)
        assert len(result.attention) == 2  # SCA-CNN: the paper's two layers
        for layer, weights in result.attention.items():
            h, w = weights.spatial.shape[1:]
            assert weights.spatial.shape == (steps, h, w) and h == w >= 1
            np.testing.assert_allclose(weights.spatial.sum(axis=(1, 2)), 1.0, atol=1e-5)
            assert weights.channel.shape[0] == steps and weights.channel.ndim == 2  # (T, C)
            encoder_channels.setdefault(layer, weights.channel.shape[1])
            assert weights.channel.shape[1] == encoder_channels[layer]
    assert model.caption(trained_run["images"][0], max_len=6)[0].attention is None  # only when asked for


def test_a_model_left_in_train_mode_captions_as_in_eval_mode_and_stays_in_train_mode(model, trained_run):
    images = trained_run["images"][:3]
    model.captioner.eval()
    expected = model.caption(images, beam_size=2)
    model.captioner.train()
    flags = {name: m.training for name, m in model.captioner.named_modules()}
    state = {k: v.clone() for k, v in model.captioner.state_dict().items()}  # BN running statistics included
    try:
        results = model.caption(images, beam_size=2)
        assert {name: m.training for name, m in model.captioner.named_modules()} == flags
        assert model.captioner.training
        for key, value in model.captioner.state_dict().items():
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    finally:
        model.captioner.eval()
    assert [r.caption for r in results] == [r.caption for r in expected]
    np.testing.assert_allclose([r.score for r in results], [r.score for r in expected], atol=1e-6)


def test_decoding_settings_are_keyword_overrides_of_the_checkpoint_defaults(model, trained_run):
    assert model.decoding.beam_size == 1 and model.decoding.max_len == 16  # configs/smoke.yaml: the defaults
    image = trained_run["images"][0]
    short = model.caption(image, max_len=2)[0]
    assert len(short.caption.split()) <= 2
    greedy, beams = model.caption(image)[0], model.caption(image, beam_size=4)[0]
    assert beams.score >= greedy.score - 1e-5  # the greedy caption is among the beams' candidates
    assert model.settings(beam_size=4).beam_size == 4 and model.decoding.beam_size == 1  # the defaults stay
    assert model.to("cpu") is model and model.device == torch.device("cpu")
    assert model.image_size == 64 and model.vocab.words[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]


def test_inputs_that_are_not_pictures_are_refused_with_a_message(model):
    with pytest.raises(ValueError, match=r"0\.\.1"):
        model.caption(torch.randn(3, 8, 8))  # an ImageNet-normalized tensor
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        model.caption(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(TypeError, match="cannot caption a dict"):
        model.caption([{}])


def test_a_missing_path_is_a_one_line_error_naming_it(tmp_path):
    for missing in (tmp_path / "best.ckpt", tmp_path / "runs" / "model"):
        with pytest.raises(CaptioningError) as error:
            captioning.load(missing)
        assert str(missing) in str(error.value) and "\n" not in str(error.value)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free now that the socket closes: nothing listens there


@pytest.mark.parametrize("offline", [False, True])
def test_a_hub_id_neither_cached_nor_reachable_fails_at_once_in_one_line(monkeypatch, offline):
    # The Hub stands at a closed local port (no internet: the test does not depend on this machine's network), or
    # HF_HUB_OFFLINE is set; either way no retries and no timeouts are waited out.
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    start = time.perf_counter()
    with pytest.raises(CaptioningError) as error:
        captioning.load("captioning-tests/no-such-model")
    assert time.perf_counter() - start < 1.5
    message = str(error.value)
    assert message.startswith("captioning-tests/no-such-model: model not found locally") and "\n" not in message
    assert "cannot be reached" in message


def test_the_readme_python_snippet_runs_as_written(trained_run, capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    checkpoint, image = "outputs/demo/main/checkpoints/best.ckpt", "data/shapes/images/test/004251.png"
    assert checkpoint in snippet and image in snippet  # what `make demo` leaves: replaced by this test's files
    code = snippet.replace(checkpoint, str(trained_run["ckpt"])).replace(image, str(trained_run["images"][0]))
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    expected = captioning.load(trained_run["ckpt"]).caption(trained_run["images"][0], beam_size=3)[0]
    caption, score = printed[0].rsplit(" ", 1)
    assert caption == expected.caption and abs(float(score) - expected.score) < 1e-4  # another batch
    assert [line.split()[0] for line in printed[2:]] == ["layer4.1.conv1", "layer4"]


def test_a_name_that_is_neither_a_path_nor_a_valid_hub_id_is_one_line():
    with pytest.raises(CaptioningError, match=r"^org/a\.\.b: not a file, a folder or a valid Hugging Face Hub id"):
        captioning.load("org/a..b")
