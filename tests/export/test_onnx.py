"""ONNX export (captioning.export.onnx) and its numpy/onnxruntime driver (captioning.export.onnx_driver) against
PyTorch: the graphs' outputs, the captions of greedy and beam search, image files, and the driver without torch."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT, WORDS
from PIL import Image
from test_benchmarks import run_benchmark
from torch import nn

from captioning.data.images import load_resized, normalize_image
from captioning.decoding import DecodingSpec, beam_search
from captioning.export import onnx as onnx_export
from captioning.export.onnx import export_onnx
from captioning.export.onnx_driver import OnnxCaptioner, load_pixels
from captioning.export.onnx_driver import beam_search as numpy_beam_search
from captioning.models.captioner import Captioner, DecoderSpec, EncoderSpec
from captioning.vocab import Vocabulary

VOCAB = Vocabulary(WORDS)  # V = 11
SUPPRESS = (VOCAB.pad, VOCAB.bos, VOCAB.unk)  # what CaptioningModule.suppressed gives with suppress_unk


# -- the search alone: numpy vs torch over the same logits ------------------------------------------------------------
class TableModel(nn.Module):
    """A stand-in captioner for the search: logits = a random table of (image, previous word) plus an <eos> logit that
    rises with the step, so captions end at different lengths and beams disagree with greedy decoding. Every row's
    logits are computed alone (a lookup and an add), so torch and numpy searches see the same numbers bit for bit."""

    def __init__(self, images: int, *, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = 2.0 * torch.randn(images, len(VOCAB), len(VOCAB), generator=g)  # (I, V, V)
        self.table[:, :, VOCAB.eos] -= 3.0

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image": images.flatten(1)[:, 0].long()}  # images (B, 1, 1, 1) hold their ids

    def init_state(self, memory: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        words = torch.zeros(len(memory["image"]))  # (B,) words so far
        return words, -words  # beam_search reorders an LSTM's (h, c): two tensors

    def step(self, tokens, state, memory):
        logits = self.table[memory["image"], tokens].clone()  # (B, V)
        logits[:, VOCAB.eos] += 0.8 * state[0]
        return logits, (state[0] + 1, state[1] - 1), {}


@pytest.mark.parametrize(
    ("beam_size", "max_len", "options"),
    [
        (1, 8, {}),
        (3, 8, {}),
        (4, 10, {"length_penalty": "average", "min_len": 2}),
        (5, 12, {"length_penalty": "gnmt", "length_alpha": 0.9, "block_trigrams": True}),
        (3, 3, {"block_trigrams": True, "suppress": (VOCAB.pad, VOCAB.bos)}),  # most beams cut at max_len; <unk> on
    ],
)
def test_numpy_beam_search_reproduces_the_torch_search(beam_size, max_len, options):
    images = 8
    model = TableModel(images, seed=beam_size + max_len)
    ids = torch.arange(images, dtype=torch.float32).view(-1, 1, 1, 1)
    settings = {"bos": VOCAB.bos, "eos": VOCAB.eos, "max_len": max_len, "beam_size": beam_size, "suppress": SUPPRESS}
    settings |= options
    expected = beam_search(model, ids, **settings)

    def step(tokens, state, memory):
        torch_state = tuple(torch.from_numpy(value) for value in state)
        images = {"image": torch.from_numpy(memory["image"])}
        logits, torch_state, _ = model.step(torch.from_numpy(tokens), torch_state, images)
        return logits.numpy(), [value.numpy() for value in torch_state]

    memory = {name: value.numpy() for name, value in model.encode(ids).items()}
    state = [value.numpy() for value in model.init_state(model.encode(ids))]
    tokens, scores = numpy_beam_search(step, memory, state, **settings)
    np.testing.assert_array_equal(tokens, expected.tokens.numpy())
    np.testing.assert_allclose(scores, expected.scores.numpy(), rtol=0, atol=1e-5)
    lengths = (tokens != VOCAB.eos).sum(axis=1)  # words before <eos> (no <eos> is generated inside a caption)
    assert len({tuple(row) for row in tokens}) > 1 and lengths.max() > lengths.min() >= options.get("min_len", 0)
    if beam_size > 1:  # the search does more than greedy decoding would
        greedy = beam_search(model, ids, **(settings | {"beam_size": 1}))
        assert (greedy.tokens.shape != expected.tokens.shape) or bool((greedy.tokens != expected.tokens).any())


# -- exported models ------------------------------------------------------------------------------------------------
def demo_specs() -> tuple[EncoderSpec, DecoderSpec, int]:
    """configs/shapes.yaml's model: width-16 CBAM ResNet-18, two-layer SCA-CNN C-S, 96 px."""
    config = yaml.safe_load((ROOT / "configs" / "shapes.yaml").read_text())
    encoder, decoder = EncoderSpec(**config["model"]["encoder"]), DecoderSpec(**config["model"]["decoder"])
    assert (encoder.attention, decoder.attention, decoder.sca_order) == ("cbam", "sca", "cs")
    return encoder, decoder, config["data"]["image_size"]


def soft_specs() -> tuple[EncoderSpec, DecoderSpec, int]:
    decoder = DecoderSpec(attention="soft", embed_dim=16, hidden_dim=32, attn_dim=16, dropout=0.0)
    return EncoderSpec(depth=18, width=8), decoder, 64


def pixels(count: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)  # (B, S, S, 3)


def to_images(batch: np.ndarray) -> torch.Tensor:
    return normalize_image(torch.from_numpy(batch).permute(0, 3, 1, 2))  # (B, 3, S, S) as the project feeds them


def memorize(captioner: Captioner, images: torch.Tensor, *, steps: int, seed: int) -> None:
    """A few AdamW steps (learning rate 1e-2) of the decoder's embedding, LSTM and output layer on fixed random
    captions of 2-5 words for ``images``.

    Why: at random initialization both models give degenerate captions (the empty caption, or one word repeated to
    ``max_len``, the same for every image), so greedy and beam search would agree trivially. After these steps the
    captions have several words, depend on the image and differ between greedy and beam search. The encoder and the
    decoder's attention stay frozen (the maps are computed once, and no gradient goes back through SCA-CNN's per-word
    layers) and the model stays in eval mode, which keeps the steps cheap."""
    g = torch.Generator().manual_seed(seed)
    rows = len(images)
    tokens = torch.randint(4, len(VOCAB), (rows, 7), generator=g)  # (B, T + 1)
    tokens[:, 0] = VOCAB.bos
    lengths = torch.arange(rows) % 4 + 3  # (B,) input steps: 2-5 words then <eos>
    for row, length in enumerate(lengths.tolist()):
        tokens[row, length - 1], tokens[row, length:] = VOCAB.eos, VOCAB.pad
    captioner.requires_grad_(False)
    trained = [p for name, p in captioner.decoder.named_parameters() if not name.startswith("attention.")]
    for parameter in trained:
        parameter.requires_grad_(True)
    captioner.eval()
    with torch.no_grad():
        features = captioner.features(images)
    optimizer = torch.optim.AdamW(trained, lr=1e-2)
    for _ in range(steps):
        logits, _ = captioner(features, tokens[:, :-1], lengths=lengths)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=VOCAB.pad)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    captioner.train()  # export must leave the mode as it finds it


def export_model(kind: str, folder: Path) -> tuple[str, Captioner, int, Path, list[Path]]:
    encoder, decoder, size = demo_specs() if kind == "sca" else soft_specs()
    torch.manual_seed(0)
    captioner = Captioner.build(len(VOCAB), encoder, decoder, bos=VOCAB.bos)
    memorize(captioner, to_images(pixels(4, size, seed=0)), steps={"sca": 8, "soft": 20}[kind], seed=1)
    flags = [m.training for m in captioner.modules()]
    grads = [p.requires_grad for p in captioner.parameters()]
    paths = export_onnx(captioner, VOCAB, image_size=size, decoding=DecodingSpec(beam_size=3, max_len=10), out=folder)
    assert [m.training for m in captioner.modules()] == flags  # train mode back, and so is requires_grad
    assert [p.requires_grad for p in captioner.parameters()] == grads and not grads[0]  # frozen by memorize
    return kind, captioner.eval(), size, folder, paths


@pytest.fixture(scope="module")
def sca_model(tmp_path_factory):
    return export_model("sca", tmp_path_factory.mktemp("sca"))


@pytest.fixture(scope="module")
def soft_model(tmp_path_factory):
    return export_model("soft", tmp_path_factory.mktemp("soft"))


@pytest.fixture(params=["sca_model", "soft_model"])
def exported(request):
    return request.getfixturevalue(request.param)


def test_export_writes_two_graphs_and_their_config(exported):
    kind, _, size, folder, paths = exported
    assert [p.name for p in paths] == ["encoder.onnx", "decoder_step.onnx", "onnx.json"]
    config = json.loads((folder / "onnx.json").read_text())
    memory = {"sca": ["block_input", "low", "pooled"], "soft": ["features", "projected", "pooled"]}[kind]
    assert config["memory"] == memory and config["state"] == ["state.0", "state.1"]  # the LSTM's (h, c)
    assert config["encoder"]["outputs"] == [*memory, "state.0", "state.1"]
    assert config["decoder_step"]["inputs"] == ["tokens", "state.0", "state.1", *memory]
    spatial = {"sca": ["alpha.layer4.1.conv1", "alpha.layer4"], "soft": ["alpha"]}[kind]
    channel = {"sca": ["beta.layer4.1.conv1", "beta.layer4"], "soft": []}[kind]
    assert config["attention"] == {"spatial": spatial, "channel": channel, "grid": [size // 32] * 2}
    assert config["decoder_step"]["outputs"] == ["logits", "next_state.0", "next_state.1", *spatial, *channel]
    assert config["vocabulary"] == WORDS and config["specials"] == {"pad": 0, "bos": 1, "eos": 2, "unk": 3}
    assert config["image_size"] == size and config["mean"] == [0.485, 0.456, 0.406]
    assert config["decoding"]["beam_size"] == 3 and config["decoding"]["max_len"] == 10
    assert config["exporter"] == {"encoder": "dynamo", "decoder_step": "dynamo"}


@torch.no_grad()
def test_graphs_match_pytorch_encoder_and_steps(exported):
    _, captioner, size, folder, _ = exported
    driver = OnnxCaptioner(folder)
    batch = pixels(3, size, seed=5)
    memory, state = driver.encode(batch)
    expected = captioner.encode(to_images(batch))
    for name, value in expected.items():
        np.testing.assert_allclose(memory[name], value.numpy(), rtol=0, atol=1e-4)
    torch_state = captioner.init_state(expected)
    tokens = np.full(3, VOCAB.bos)
    for _ in range(5):  # greedy words, fed to both
        logits, state = driver.step(tokens, state, memory)
        torch_logits, torch_state, _ = captioner.step(torch.from_numpy(tokens), torch_state, expected)
        np.testing.assert_allclose(logits, torch_logits.numpy(), rtol=0, atol=1e-4)
        for got, want in zip(state, torch_state, strict=True):
            np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4)
        tokens = torch_logits.argmax(dim=1).numpy()


@pytest.mark.parametrize("beam_size", [1, 3])
def test_driver_captions_equal_pytorch_beam_search(exported, beam_size):
    _, captioner, size, folder, _ = exported
    batch = np.concatenate([pixels(4, size, seed=0), pixels(2, size, seed=6)])  # the memorized four, two new
    results = OnnxCaptioner(folder).caption(batch, beam_size=beam_size)
    expected = beam_search(
        captioner, to_images(batch), bos=VOCAB.bos, eos=VOCAB.eos, max_len=10, beam_size=beam_size, suppress=SUPPRESS
    )
    assert [r["caption"] for r in results] == [VOCAB.decode(row) for row in expected.tokens]
    assert [r["caption"] for r in results] == [" ".join(r["words"]) for r in results]
    np.testing.assert_allclose([r["score"] for r in results], expected.scores.numpy(), rtol=0, atol=1e-4)
    assert len({r["caption"] for r in results}) > 1 and max(len(r["words"]) for r in results) >= 2


def test_beam_search_differs_from_greedy_on_these_models(exported):
    """The models are not degenerate: some image's beam-3 caption is not its greedy one (see :func:`memorize`)."""
    _, _, size, folder, _ = exported
    driver = OnnxCaptioner(folder, threads=1)
    batch = np.concatenate([pixels(4, size, seed=0), pixels(2, size, seed=6)])
    greedy, beams = (driver.caption(batch, beam_size=k) for k in (1, 3))
    assert any(g["words"] != b["words"] for g, b in zip(greedy, beams, strict=True))


def test_driver_reads_image_files_without_importing_torch(soft_model, tmp_path):
    _, captioner, size, folder, _ = soft_model
    batch = pixels(2, 80, seed=7)
    files = [tmp_path / "a.png", tmp_path / "b.jpg"]
    for picture, path in zip(batch, files, strict=True):
        Image.fromarray(picture).save(path)
    script = (
        "import json, sys\n"
        "from captioning.export.onnx_driver import OnnxCaptioner\n"
        f"results = OnnxCaptioner({str(folder)!r}).caption({[str(f) for f in files]!r}, beam_size=2)\n"
        "print(json.dumps({'results': results, 'torch': 'torch' in sys.modules}))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    report = json.loads(run.stdout)
    assert report["torch"] is False
    files_pixels = np.stack([load_resized(path, size).permute(1, 2, 0).numpy() for path in files])
    expected = beam_search(
        captioner, to_images(files_pixels), bos=VOCAB.bos, eos=VOCAB.eos, max_len=10, beam_size=2, suppress=SUPPRESS
    )
    assert [r["caption"] for r in report["results"]] == [VOCAB.decode(row) for row in expected.tokens]


def test_file_pixels_match_the_project_resize(tmp_path):
    """PIL's bilinear resize against the project's (torchvision, antialiased): a rounding apart on a few values."""
    rgba = np.random.default_rng(8).integers(0, 256, (70, 90, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(np.arange(90) < 45, 255, 0)  # right half transparent: white after compositing
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "photo.jpg", quality=90)
    Image.fromarray(rgba[..., 0]).save(tmp_path / "grey.png")
    for name in ("alpha.png", "photo.jpg", "grey.png"):
        for size in (32, 96):  # shrunk and enlarged
            ours = load_pixels(tmp_path / name, size).astype(int)  # (S, S, 3)
            project = load_resized(tmp_path / name, size).permute(1, 2, 0).numpy().astype(int)
            gaps = np.abs(ours - project)
            assert gaps.max() <= 1 and (gaps > 0).mean() < 0.005, (name, size, gaps.max(), (gaps > 0).mean())


def test_a_folder_without_onnx_json_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "onnx.json")):
        OnnxCaptioner(tmp_path)
    (tmp_path / "onnx.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"onnx\.json: not valid JSON"):
        OnnxCaptioner(tmp_path)
    (tmp_path / "onnx.json").write_text(json.dumps({"vocabulary": WORDS}))
    with pytest.raises(ValueError, match="missing encoder, decoder_step"):
        OnnxCaptioner(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.png: image file not found"):
        load_pixels(tmp_path / "missing.png", 32)


def test_a_missing_graph_or_a_newer_format_is_named(soft_model, tmp_path):
    _, _, _, folder, _ = soft_model
    config = json.loads((folder / "onnx.json").read_text())
    (tmp_path / "onnx.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=r"encoder\.onnx: graph named in onnx\.json is missing"):
        OnnxCaptioner(tmp_path)
    (tmp_path / "onnx.json").write_text(json.dumps(config | {"version": 2}))
    with pytest.raises(ValueError, match="version 2; this driver reads captioning-onnx up to version 1"):
        OnnxCaptioner(tmp_path)


def test_the_torchscript_exporter_takes_over_when_dynamo_fails(tmp_path, monkeypatch):
    """A graph torch.export cannot capture still exports, and the export's parity check still runs on it."""
    export = torch.onnx.export

    def no_dynamo(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("torch.export could not capture the graph")
        return export(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(onnx_export.torch.onnx, "export", no_dynamo)
    torch.manual_seed(0)
    encoder = EncoderSpec(arch="vgg", depth=16, width=4)
    captioner = Captioner.build(
        len(VOCAB), encoder, DecoderSpec(attention="soft", embed_dim=8, hidden_dim=8, attn_dim=8)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(captioner, VOCAB, image_size=32, decoding=DecodingSpec(), out=tmp_path)
    assert any("dynamo ONNX exporter failed (torch.export could not" in str(w.message) for w in caught)
    assert json.loads((tmp_path / "onnx.json").read_text())["exporter"]["decoder_step"] == "torchscript"
    results = OnnxCaptioner(tmp_path).caption(pixels(2, 32, seed=9))
    expected = beam_search(captioner, to_images(pixels(2, 32, seed=9)), bos=1, eos=2, max_len=16, suppress=SUPPRESS)
    assert [r["caption"] for r in results] == [VOCAB.decode(row) for row in expected.tokens]


def test_latency_benchmark_smoke(capsys):
    stdout = run_benchmark(capsys, "onnx_latency.py", "--smoke", "--repeats", "1", "--threads", "1")
    lines = stdout.splitlines()
    assert lines[0].startswith("1 CPU threads")
    rows = [line.split("|") for line in lines if line.startswith("| smoke")]
    assert [row[2].strip() for row in rows] == ["1", "3"]
    for row in rows:
        torch_ms, onnx_ms, ratio = (float(cell) for cell in row[3:6])
        assert torch_ms > 0 and onnx_ms > 0 and abs(ratio - torch_ms / onnx_ms) <= 0.01 * ratio + 0.01
        assert row[6].strip() == "yes"  # identical captions
