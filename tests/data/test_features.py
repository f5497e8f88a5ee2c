"""Pre-extracted features (``captioning extract``, ``--data.features``): training steps on them give the losses of
the same steps through the frozen CNN, evaluation the same captions; a folder made for another model is refused in
one line; extraction resumes, shards, and skips unreadable images."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from captioning.cli.extract import main as extract
from captioning.config import build, run_config
from captioning.data.features import FeatureStore
from captioning.data.records import DataWarning
from captioning.data.shapes import generate_shapes
from captioning.errors import CaptioningError, ConfigError
from captioning.models.captioner import Captioner, DecoderSpec, EncoderSpec
from captioning.workflows import evaluate, evaluation

FROZEN = ["--model.encoder.trainable", "false"]


def build_from_config(args: list[str]) -> tuple:
    """The module and data module a fit config describes."""
    cli = build(args)
    return cli.model, cli.datamodule


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, train=24, val=6, test=5, seed=4, image_size=64, show_progress=False)
    broken = sorted((root / "images" / "train").glob("*.png"))[3]
    broken.write_bytes(b"not a png")  # one unreadable training image: recorded at extraction, skipped when read
    return root


def _config(shapes: Path, attention: str, *extra: str) -> list[str]:
    args = ["--config", str(ROOT / "configs/smoke.yaml"), "--data.root", str(shapes), "--data.image_cache", "none"]
    return [*args, "--model.decoder.attention", attention, *FROZEN, *extra]


@pytest.fixture(scope="module")
def features(shapes, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for attention in ("sca", "soft"):
        folder = tmp_path_factory.mktemp(f"features_{attention}")
        extract([*_config(shapes, attention), "--out", str(folder), "--num-workers", "0", "--batch-size", "8"])
        out[attention] = folder
    return out


def _train_steps(args: list[str], steps: int = 3) -> tuple[list[float], list[str], int]:
    """Losses of ``steps`` optimizer steps from the config's initial weights, then greedy captions of the val split."""
    module, data = build_from_config(args)
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    losses = []
    for batch, _ in zip(data.train_dataloader(), range(steps), strict=False):
        loss = module.loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    captions = [c for batch in data.val_dataloader() for c in module.generate(batch.images)[0]]
    skipped = sum(batch.skipped for batch in data.train_dataloader())
    return losses, captions, skipped


@pytest.mark.parametrize("attention", ["sca", "soft"])
def test_training_on_features_equals_training_through_the_frozen_cnn(shapes, features, attention):
    with pytest.warns(DataWarning, match="not a png|cannot read"):
        through_cnn = _train_steps(_config(shapes, attention))
    with pytest.warns(DataWarning, match="recorded when the features were extracted"):
        on_features = _train_steps([*_config(shapes, attention), "--data.features", str(features[attention])])
    np.testing.assert_allclose(on_features[0], through_cnn[0], rtol=2e-3)  # float16 storage
    assert on_features[0][0] != on_features[0][-1]  # the steps did train
    assert on_features[1] == through_cnn[1]  # the same captions after the same steps
    assert on_features[2] == through_cnn[2] == 1  # the unreadable image is skipped and counted in both


def test_the_folder_holds_float16_maps_of_what_the_attention_reads(features, shapes):
    store = FeatureStore(features["sca"])
    assert store.identity["attention"] == "sca" and store.identity["lowest_attended"] == "layer4.1.conv1"
    assert store.identity["features"] == {"block_input": [64, 2, 2], "low": [64, 2, 2]}  # width 8: 64 ch at 64 px
    train = store.split("train")
    assert len(train.ids) == 24 and len(train.bad) == 1
    array = np.load(features["sca"] / "train" / "low.npy", mmap_mode="r")
    assert array.dtype == np.float16 and array.shape == (24, 64, 2, 2)
    assert FeatureStore(features["soft"]).identity["features"] == {"map": [64, 2, 2]}


def test_features_of_another_model_are_refused_in_one_line(shapes, features):
    module, _ = build_from_config(_config(shapes, "sca", "--model.encoder.width", "16"))
    with pytest.raises(ConfigError, match=r"features made for another model \(encoder.width: the features have 8"):
        FeatureStore(features["sca"]).check(module.feature_identity())
    with pytest.raises(ConfigError, match=r"features of 64 px images; data\.image_size is 96"):
        build_from_config([*_config(shapes, "sca", "--data.image_size", "96"), "--data.features", str(features["sca"])])
    trainable = _config(shapes, "sca")[:-2]  # the encoder trains: no stored map can stand for it
    module, _ = build_from_config(trainable)
    with pytest.raises(ConfigError, match="lies below the stored maps"):
        module.feature_identity()


def test_extraction_resumes_and_shards_write_the_same_arrays(shapes, features, tmp_path):
    reference = np.load(features["sca"] / "train" / "low.npy")
    sharded = tmp_path / "sharded"
    common = [*_config(shapes, "sca"), "--out", str(sharded), "--num-workers", "0", "--batch-size", "4"]
    assert extract([*common, "--shards", "2", "--shard", "1", "--splits", "train"]) == {"train": 12}
    with pytest.raises(CaptioningError, match="12 of 24 images extracted; rerun captioning extract"):
        FeatureStore(sharded).split("train")
    # shard 0 "interrupted" after its first batch: its progress says 4 rows, the rows after it are lost
    assert extract([*common, "--shards", "2", "--shard", "0", "--splits", "train"]) == {"train": 12}
    (sharded / "train" / "done_0.json").write_text(json.dumps({"rows": 4}))
    array = np.load(sharded / "train" / "low.npy", mmap_mode="r+")
    array[4:12] = 0
    array.flush()
    assert extract([*common, "--shards", "2", "--shard", "0", "--splits", "train"]) == {"train": 8}  # resumed
    assert extract([*common, "--shards", "2", "--shard", "0", "--splits", "train"]) == {"train": 0}  # done
    # equal up to one float16 rounding step: other batch sizes give the convolutions other float32 rounding
    np.testing.assert_allclose(np.load(sharded / "train" / "low.npy"), reference, rtol=2e-3, atol=1e-6)
    assert np.abs(np.load(sharded / "train" / "low.npy")[4:12]).sum() > 0  # the lost rows were written again
    assert len(FeatureStore(sharded).split("train").bad) == 1
    with pytest.raises(CaptioningError, match="written with 2 shards, this run has 3"):
        extract([*common, "--shards", "3", "--shard", "0"])


def test_a_split_without_features_for_some_images_is_refused(shapes, features, tmp_path):
    store = tmp_path / "partial"
    extract([*_config(shapes, "sca"), "--out", str(store), "--num-workers", "0", "--splits", "val"])
    _, data = build_from_config([*_config(shapes, "sca"), "--data.features", str(store)])
    with pytest.raises(CaptioningError, match="no train features"):
        data.train_dataloader()
    ids = json.loads((store / "val" / "ids.json").read_text())
    (store / "val" / "ids.json").write_text(json.dumps([i + 1000 for i in ids]))
    _, data = build_from_config([*_config(shapes, "sca"), "--data.features", str(store)])
    with pytest.raises(CaptioningError, match="6 of the split's 6 images have no features"):
        data.val_dataloader()


def test_evaluate_on_features_gives_the_captions_and_scores_of_evaluate_on_images(
    shapes, features, tmp_path, monkeypatch
):
    monkeypatch.setattr(evaluation, "METRICS", ("Bleu", "ROUGE_L", "CIDEr"))  # no METEOR JVM start for this one
    run = tmp_path / "run"
    args = [*_config(shapes, "sca"), "--data.features", str(features["sca"]), "--trainer.max_epochs", "1"]
    args += ["--trainer.default_root_dir", str(run), "--checkpoint.dirpath", str(run), "--trainer.logger", "false"]
    run_config(["fit", *args])
    on_images = evaluate(run / "best.ckpt", shapes, "test", tmp_path / "images", spice=False)
    on_features = evaluate(
        run / "best.ckpt", shapes, "test", tmp_path / "features", features=features["sca"], spice=False
    )
    assert on_features == on_images
    results = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("images", "features")]
    assert results[0] == results[1] and len(results[0]) == 5


@pytest.mark.parametrize(
    ("encoder", "layers"),
    [
        (EncoderSpec(depth=18, attention="cbam", width=8), ()),  # basic blocks, lowest level the inner conv
        (EncoderSpec(depth=18, width=8), ("layer4.0", "layer4")),  # lowest level the block input itself
        (EncoderSpec(depth=50, width=8), ("layer4.2.conv1", "layer4.2.conv2", "layer4")),  # the paper's 3 layers
        (EncoderSpec(arch="vgg", depth=16, width=8), ()),  # no shortcut: only the lowest map is stored
    ],
)
def test_the_memory_from_features_is_the_memory_from_images(encoder, layers):
    torch.manual_seed(0)
    decoder = DecoderSpec(attention="sca", embed_dim=8, hidden_dim=16, attn_dim=8, sca_layers=layers)
    captioner = Captioner.build(20, encoder, decoder).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = captioner.features(images)
        expected, got = captioner.encode(images), captioner.encode(features)
    stored = (
        {"low"} if encoder.arch == "vgg" else {"block_input"} if layers[:1] == ("layer4.0",) else {"block_input", "low"}
    )
    assert set(features) == stored
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_a_fine_tuning_schedule_is_refused_on_features_before_training(shapes, features, tmp_path):
    """Frozen at setup, the CNN would pass the module's check; the stages unfrozen later would never run."""
    args = ["fit", *_config(shapes, "sca"), "--data.features", str(features["sca"]), "--finetuning.frozen_epochs", "1"]
    args += ["--trainer.default_root_dir", str(tmp_path), "--checkpoint.dirpath", str(tmp_path)]
    with pytest.raises(ConfigError, match=r"finetuning.frozen_epochs trains CNN stages that pre-extracted features"):
        run_config(args)
