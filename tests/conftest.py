from pathlib import Path

import pytest
import torch
from pycocoevalcap.meteor.meteor import Meteor

from captioning.cli import main
from captioning.config import run_config
from captioning.data.dataset import Batch
from captioning.data.shapes import generate_shapes
from captioning.decoding import DecodingSpec
from captioning.models.captioner import DecoderSpec, EncoderSpec
from captioning.module import CaptioningModule
from captioning.vocab import SPECIALS

ROOT = Path(__file__).resolve().parents[1]  # the repository (configs/, benchmarks/, notebooks/)
FIXTURES = ROOT / "tests" / "fixtures"  # files the tests read: an old release's checkpoint
WORDS = [*SPECIALS, *(f"w{i}" for i in range(7))]  # V = 11
SIZES = {"embed_dim": 8, "hidden_dim": 16, "attn_dim": 8}  # the tiny decoder's


def tiny_module(
    attention: str = "soft",
    *,
    encoder: dict | None = None,
    decoder: dict | None = None,
    decoding: DecodingSpec = DecodingSpec(max_len=5),  # noqa: B008 - frozen dataclass: immutable default
    **kwargs,
) -> CaptioningModule:
    """The suite's tiny model (seeded): a width-8 CBAM ResNet-18 and an 8/16/8 decoder with ``attention`` over an
    11-word vocabulary, 64 px; ``encoder`` / ``decoder`` override fields of those specs, ``kwargs`` go to
    :class:`CaptioningModule`."""
    torch.manual_seed(0)
    return CaptioningModule(
        WORDS,
        encoder=EncoderSpec(**{"depth": 18, "attention": "cbam", "width": 8} | (encoder or {})),
        decoder=DecoderSpec(
            **{"attention": attention, "embed_dim": 8, "hidden_dim": 16, "attn_dim": 8, "dropout": 0.0}
            | (decoder or {})
        ),
        image_size=64,
        decoding=decoding,
        **kwargs,
    )


def tiny_batch(batch_size: int = 2, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, len(WORDS), (batch_size, 7), generator=g)  # (B, T + 1)
    tokens[:, 0] = 1  # <bos>
    lengths = torch.tensor([7, 5][:batch_size] + [6] * max(0, batch_size - 2))
    for row, length in enumerate(lengths):
        tokens[row, length - 1] = 2  # <eos>
        tokens[row, length:] = 0  # <pad>
    return Batch(
        images=torch.randn(batch_size, 3, 64, 64, generator=g),
        tokens=tokens,
        lengths=lengths,
        image_ids=list(range(batch_size)),
        references=[["w1 w2"]] * batch_size,
    )


@pytest.fixture
def module() -> CaptioningModule:
    return tiny_module()


def run_cli(capsys, *args) -> tuple[int, str]:
    """``captioning ARGS`` run in this process, as the console script runs it: its exit status and its stderr.
    (tests/cli/test_cli.py runs it once as a real process too.)"""
    capsys.readouterr()
    try:
        main([str(arg) for arg in args])
        status = 0
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


@pytest.fixture(scope="session")
def pycocoevalcap_meteor():
    """pycocoevalcap's own ``Meteor()``, the reference the tests compare with: one JVM for the session (its -stdio
    mode keeps no state between calls; tests/metrics/test_scorers.py checks ours against golden fresh-JVM values)."""
    scorer = Meteor()
    yield scorer
    scorer.meteor_p.kill()
    scorer.meteor_p.communicate()  # reaps the JVM and closes the pipes


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> dict:
    """A tiny SCA-CNN model trained for one epoch (2 steps) by ``captioning fit`` on a generated shapes set, once for
    the session (tests/test_api.py, tests/export/test_pretrained.py, tests/cli/test_caption.py): its run folder
    (``run.json``, ``config.yaml``), its ``best.ckpt`` (with the checkpoint callback's val/CIDEr) and the set's test
    images."""
    shapes = tmp_path_factory.mktemp("api_shapes")
    generate_shapes(shapes, train=16, val=4, test=6, seed=5, image_size=64, show_progress=False)
    run = tmp_path_factory.mktemp("api_run")
    smoke = ROOT / "configs" / "smoke.yaml"
    run_config(
        [
            *("fit", "--config", str(smoke), "--data.root", str(shapes), "--model.decoder.attention", "sca"),
            *("--trainer.default_root_dir", str(run), "--checkpoint.dirpath", str(run / "checkpoints")),
            *("--trainer.max_epochs", "1", "--trainer.num_sanity_val_steps", "0"),
            *("--trainer.enable_progress_bar", "false", "--model.evaluation.tokenizer", "python"),
            *("--samples.num_images", "0"),  # no attention figures on the dashboard: seconds of matplotlib
        ]
    )
    images = sorted((shapes / "images" / "test").glob("*.png"))
    return {"run": run, "ckpt": run / "checkpoints" / "best.ckpt", "images": images, "shapes": shapes}
