"""``captioning export`` / ``save_pretrained``: the Hub's folder layout (safetensors, config.json, model card) read
back with no pickle, captioning exactly as the checkpoint; the card's front matter and the checkpoint's scores."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

import captioning
from captioning.cli import main
from captioning.errors import CaptioningError
from captioning.export.pretrained import save_pretrained


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> Path:
    """``captioning export --ckpt best.ckpt --out DIR``."""
    out = tmp_path_factory.mktemp("exported")
    main(["export", "--ckpt", str(trained_run["ckpt"]), "--out", str(out)])
    return out


def checkpoint_score(path: Path) -> tuple[str, float]:
    """The checkpoint callback's monitor and best score, read from the file as Lightning wrote it."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # this test's own file
    (state,) = [s for key, s in checkpoint["callbacks"].items() if key.startswith("ModelCheckpoint")]
    return state["monitor"], float(state["best_model_score"])


def test_the_exported_folder_captions_as_the_checkpoint_and_holds_no_pickle(trained_run, exported, monkeypatch):
    assert sorted(p.name for p in exported.rglob("*")) == ["README.md", "config.json", "model.safetensors"]

    def refuse(*args, **kwargs):
        raise AssertionError("an exported folder is read without unpickling")

    for name, target in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(name, target, refuse)
    folder_model = captioning.load(exported)
    monkeypatch.undo()
    checkpoint_model = captioning.load(trained_run["ckpt"])
    images = trained_run["images"]
    for settings in ({}, {"beam_size": 3, "length_penalty": "average"}):
        ours = folder_model.caption(images, attention=True, **settings)
        theirs = checkpoint_model.caption(images, attention=True, **settings)
        assert [r.caption for r in ours] == [r.caption for r in theirs]
        np.testing.assert_allclose([r.score for r in ours], [r.score for r in theirs], atol=1e-5, rtol=0)
        for a, b in zip(ours, theirs, strict=True):
            for layer in b.attention:
                np.testing.assert_allclose(a.attention[layer].spatial, b.attention[layer].spatial, atol=1e-6)
                np.testing.assert_allclose(a.attention[layer].channel, b.attention[layer].channel, atol=1e-6)
    assert folder_model.fingerprint() == checkpoint_model.fingerprint()
    assert folder_model.decoding == checkpoint_model.decoding and folder_model.image_size == 64
    assert folder_model.config == json.loads((exported / "config.json").read_text()) == checkpoint_model.config


def test_config_json_describes_the_model_and_where_it_came_from(trained_run, exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["format"] == "captioning" and config["format_version"] == 1
    assert config["encoder"]["attention"] == "cbam" and config["decoder"]["attention"] == "sca"
    assert config["vocabulary"]["words"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert config["vocabulary"]["rule"] == {"counted": "train", "min_count": 1}
    assert config["image_size"] == 64 and config["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert config["decoding"]["beam_size"] == 1 and config["decoding"]["max_len"] == 16
    assert config["source"]["checkpoint"] == str(trained_run["ckpt"].resolve())
    assert (config["source"]["epoch"], config["source"]["global_step"]) == (0, 2)
    monitor, score = checkpoint_score(trained_run["ckpt"])
    assert config["validation"]["monitor"] == monitor == "val/CIDEr" and config["validation"]["mode"] == "max"
    assert config["validation"]["score"] == pytest.approx(score, abs=1e-7)
    training = config["training"]
    assert (training["accelerator"], training["devices"], training["world_size"]) == ("cpu", 1, 1)
    assert training["run_folder"].endswith("lightning_logs/version_0") and 0 < training["seconds"] < 600
    assert training["machine"]["cpu_cores"] == os.cpu_count()  # run.json's hardware
    assert config["data"]["root"] == str(trained_run["shapes"])


def test_the_model_card_has_hub_front_matter_and_the_checkpoint_scores(trained_run, exported):
    card = ModelCard.load(exported / "README.md")  # huggingface_hub parses the YAML front matter
    data = card.data.to_dict()
    assert data["library_name"] == "captioning" and data["pipeline_tag"] == "image-to-text"
    assert data["license"] == "mit" and {"image-captioning", "sca-cnn", "cbam"} <= set(data["tags"])
    _, score = checkpoint_score(trained_run["ckpt"])
    (result,) = data["model-index"][0]["results"]
    assert result["metrics"][0]["name"] == "val/CIDEr" and result["metrics"][0]["value"] == round(score, 6)
    assert result["dataset"]["split"] == "validation"
    text = card.text
    sections = ["Model", "Data", "Validation scores", "Decoding", "Training", "Usage", "Citations"]
    assert [line[3:] for line in text.splitlines() if line.startswith("## ")] == sections
    assert f"| score | {score:.4f} |" in text and "this checkpoint (the run's best)" in text
    assert "ResNet-18 encoder" in text and "SCA-CNN" in text and "| hardware | cpu x 1 on " in text
    assert f"({os.cpu_count()} cores)" in text  # the machine's CPU, from run.json
    hours = json.loads((trained_run["run"] / "lightning_logs" / "version_0" / "run.json").read_text())["fit_seconds"]
    assert f"| training time | {hours / 3600:.2f} h |" in text  # run.json's fit_seconds
    for key in ("chen2017sca", "xu2015show", "woo2018cbam"):
        assert f"@inproceedings{{{key}," in text


def test_caption_command_reads_an_exported_folder(trained_run, exported, capsys):
    image = trained_run["images"][0]
    main(["caption", str(image), "--ckpt", str(exported)])
    (line,) = capsys.readouterr().out.splitlines()
    expected = captioning.load(trained_run["ckpt"]).caption(image)[0].caption
    assert line == f"{image}\t{expected}"


def test_an_exported_model_exports_again_unchanged(exported, tmp_path):
    again = save_pretrained(captioning.load(exported), tmp_path / "again")
    assert (again / "config.json").read_text() == (exported / "config.json").read_text()
    assert (again / "model.safetensors").read_bytes() == (exported / "model.safetensors").read_bytes()


def test_folders_that_are_not_exports_are_one_line_errors(exported, tmp_path):
    with pytest.raises(CaptioningError, match="not an exported model folder") as error:
        captioning.load(tmp_path)
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)
    newer = tmp_path / "newer"
    newer.mkdir()
    config = json.loads((exported / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**config, "format_version": 2}))
    with pytest.raises(CaptioningError, match="format version 2; this library reads 1"):
        captioning.load(newer)
    (newer / "config.json").write_text(json.dumps(config))
    (newer / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CaptioningError, match=r"model\.safetensors: cannot read the weights"):
        captioning.load(newer)
