"""``captioning evaluate`` on a small COCO-layout folder with an untrained tiny checkpoint (no training run): what
``scores.json`` records, and three processes on a split whose size is not a multiple of 3 equal one (captions,
scores, grounding), with ``timing.json``."""

import contextlib
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import ROOT, WORDS, tiny_module
from PIL import Image

from captioning.checkpoints import load_checkpoint
from captioning.cli.evaluate import main as evaluate
from captioning.config import run_config
from captioning.data.shapes import generate_shapes
from captioning.metrics.evaluator import EvaluationSpec

TEST_IMAGES = 13  # 13 = 3 x 4 + 1: DistributedSampler pads the 3 ranks' shards with 2 repeated images
RESULTS = ("scores.json", "results.json", "per_image.json")


def write_split(root: Path, split: str, count: int, rng: random.Random) -> None:
    """``root/captions_{split}.json`` and its images (colour ramps, which the untrained model tells apart better than
    noise): 3 references per image from the model's words."""
    images, annotations = [], []
    for index in range(count):
        image_id = 1000 * (1 + ["train", "val", "test"].index(split)) + index
        name = f"{split}/{image_id}.png"
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        colours = np.random.default_rng(image_id)
        ramp = (np.mgrid[:64, :64][index % 2] / 63.0)[..., None]  # (64, 64, 1): across or down
        pixels = colours.integers(0, 256, 3) + colours.integers(-120, 120, 3) * ramp  # (64, 64, 3)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / "images" / name)
        images.append({"id": image_id, "file_name": name})
        for _ in range(3):
            caption = " ".join(rng.choices(WORDS[4:], k=rng.randint(2, 5)))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
    (root / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    if split == "test":  # one box per test image: grounding and object naming travel and dedupe with the captions
        boxes = [
            {"id": k + 1, "image_id": image["id"], "bbox": [8, 8, 24, 24], "category_id": 1 + k % 2, "area": 576}
            for k, image in enumerate(images)
        ]
        categories = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
        instances = {"images": images, "annotations": boxes, "categories": categories}
        (root / "instances_test.json").write_text(json.dumps(instances))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    rng = random.Random(0)
    for split, count in (("train", 1), ("val", 1), ("test", TEST_IMAGES)):
        write_split(root, split, count, rng)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny model whose captions differ between images (a stronger image-to-state projection and a
    peaky output layer), saved as ``fit`` saves checkpoints."""
    module = tiny_module(
        evaluation=EvaluationSpec(metrics=("Bleu", "CIDEr")),
        vocabulary_rule={"counted": "train", "min_count": 3},
    )
    decoder = module.captioner.decoder
    with torch.no_grad():
        for weight in (decoder.init_h.weight, decoder.init_c.weight, decoder.output.weight):
            weight.mul_(8.0)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path


def arguments(folder: Path, checkpoint: Path) -> list[str]:
    return ["--ckpt", str(checkpoint), "--data-root", str(folder), "--split", "test", "--no-spice", "--batch-size", "2"]


@pytest.fixture(scope="module")
def one_process(folder, checkpoint, tmp_path_factory) -> tuple[Path, dict[str, float], str]:
    """``evaluate`` in this process: its folder, what it returned, and what it printed."""
    out = tmp_path_factory.mktemp("one")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        returned = evaluate([*arguments(folder, checkpoint), "--out", str(out)])
    return out, returned, printed.getvalue()


def test_scores_json_records_the_decoding_settings_and_the_vocabulary(folder, checkpoint, one_process, tmp_path):
    out, returned, printed = one_process
    scores = json.loads((out / "scores.json").read_text())
    assert {k: v for k, v in scores.items() if k not in ("decoding", "vocabulary")} == returned  # metrics on top
    assert set(returned) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
    assert all(isinstance(value, float) for value in returned.values())
    assert scores["decoding"] == {
        "beam_size": 1,
        "length_penalty": "none",
        "length_alpha": 0.6,
        "min_len": 0,
        "max_len": 5,
        "block_trigrams": False,
        "suppress_unk": True,
    }
    assert scores["vocabulary"] == {"size": len(WORDS), "counted": "train", "min_count": 3}
    assert f'"CIDEr": {scores["CIDEr"]}' in printed and '"decoding"' not in printed  # evaluate prints the metrics

    overrides = ["--beam-size", "3", "--min-len", "2", "--length-penalty", "average", "--block-trigrams"]
    evaluate([*arguments(folder, checkpoint), *overrides, "--out", str(tmp_path / "beam")])
    decoding = json.loads((tmp_path / "beam" / "scores.json").read_text())["decoding"]
    changed = {"beam_size": 3, "min_len": 2, "length_penalty": "average", "block_trigrams": True}
    assert decoding == scores["decoding"] | changed


def test_fit_records_the_vocabulary_rule_in_the_checkpoint(tmp_path):
    generate_shapes(tmp_path / "shapes", train=6, val=2, test=2, seed=0, image_size=32, show_progress=False)
    args = ["validate", "--config", str(ROOT / "configs/smoke.yaml"), "--data.root", str(tmp_path / "shapes")]
    cli = run_config([*args, "--data.min_count", "2", "--trainer.limit_val_batches", "0", "--data.image_size", "32"])
    assert cli.model.hparams.vocabulary_rule == {"counted": "train", "min_count": 2}
    cli.trainer.save_checkpoint(tmp_path / "model.ckpt")
    settings = load_checkpoint(tmp_path / "model.ckpt").evaluation_settings()
    assert settings["vocabulary"] == {"size": len(cli.datamodule.vocab), "counted": "train", "min_count": 2}
    words = ["validate", *args[1:], "--data.vocabulary", json.dumps(cli.datamodule.vocab.words)]
    listed = run_config([*words, "--trainer.limit_val_batches", "0", "--data.image_size", "32"])
    assert listed.model.hparams.vocabulary_rule is None  # a bare word list says nothing of how it was made


def test_evaluate_on_three_processes_equals_one_on_13_images(folder, checkpoint, one_process, tmp_path):
    """DistributedSampler gives each of the 3 ranks 5 images, 2 of them repeats; the evaluator gathers every caption
    and drops the repeats before scoring the split once."""
    command = [sys.executable, "-m", "captioning.cli", "evaluate", *arguments(folder, checkpoint)]
    command += ["--devices", "3", "--metrics", "Bleu", "ROUGE_L", "CIDEr", "--out", str(tmp_path)]  # no METEOR JVM
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    three, one = ({n: json.loads((d / n).read_text()) for n in RESULTS} for d in (tmp_path, one_process[0]))
    assert three["results.json"] == one["results.json"]
    assert three["scores.json"] == {k: v for k, v in one["scores.json"].items() if k != "METEOR"}  # only those asked
    assert three["per_image.json"] == {
        i: {k: v for k, v in scores.items() if k != "METEOR"} for i, scores in one["per_image.json"].items()
    }
    grounding = [json.loads((d / "grounding.json").read_text()) for d in (tmp_path, one_process[0])]
    assert grounding[0] == grounding[1]  # per-image tallies dedupe with the captions: a repeat would count twice
    assert grounding[0]["present.circle"] + grounding[0]["present.square"] == TEST_IMAGES
    timing = [json.loads((d / "timing.json").read_text()) for d in (one_process[0], tmp_path)]
    assert [t["processes"] for t in timing] == [1, 3] and timing[0]["gather_s"] == 0.0 < timing[1]["gather_s"]
    assert timing[1]["images"] == TEST_IMAGES and all(0 < t["score_s"] < t["test_s"] for t in timing)
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == TEST_IMAGES
    assert len({row["caption"] for row in results}) > 3  # captions differ between images: a repeat would count
