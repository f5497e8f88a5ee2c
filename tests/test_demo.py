"""The demo's acceptance bars (captions, and attention grounding at least 2x chance in both SCA-CNN layers) on a
full-size run: about 20 minutes on 2 cores (`make test-slow`)."""

import json
from pathlib import Path

import pytest

from captioning.cli import main
from captioning.viz.report import find_browser

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_beats_the_blind_model_and_approaches_reference_agreement(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the demo reads configs/shapes.yaml
    main(["demo", "--data", str(tmp_path / "shapes"), "--out", str(tmp_path / "demo"), "--figures", "2"])
    model = json.loads((tmp_path / "demo" / "scores.json").read_text())["CIDEr"]
    blind = json.loads((tmp_path / "demo" / "blind" / "scores.json").read_text())["CIDEr"]
    references = json.loads((tmp_path / "demo" / "reference_agreement.json").read_text())["CIDEr"]
    assert model >= 3 * blind
    assert model >= 0.8 * references
    grounding = json.loads((tmp_path / "demo" / "grounding.json").read_text())
    layers = [k.removeprefix("pointing.") for k in grounding if k.startswith("pointing.")]
    assert len(layers) == 2  # the demo's main model: SCA-CNN on the paper's two layers
    # pointing >= 2x chance in every attended layer: 2.1x (layer4.1.conv1) and 2.4x (layer4) here
    assert all(grounding[f"pointing.{k}"] >= 2 * grounding[f"area.{k}"] for k in layers)
    figures = sorted(p.name.split("_", 1)[1] for p in (tmp_path / "demo" / "figures").glob("*.png"))
    # SCA-CNN C-S: spatial and channel figures; the CBAM backbone: gates
    assert figures == ["attention.png"] * 2 + ["channels.png"] * 2 + ["gates.png"] * 2
    assert (tmp_path / "demo" / "report.html").stat().st_size > 1_000_000  # 250 images with their attention
    assert (tmp_path / "demo" / "report.png").is_file() == (find_browser() is not None)
    assert "caption of one test image" in capsys.readouterr().out
