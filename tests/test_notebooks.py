"""The notebooks run top to bottom on a fresh kernel, and are stored without outputs."""

import ast
import importlib
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def _text(notebook: nbformat.NotebookNode) -> str:
    return json.dumps([cell.get("outputs", []) for cell in notebook.cells])


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert not any(line.startswith(("class ", "def ")) for cell in code for line in cell.source.splitlines())


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_every_name_a_notebook_imports_from_captioning_exists(path):
    """What breaks a notebook when the library moves on, checked without running it (the slow suite runs both)."""
    notebook = nbformat.read(path, as_version=4)
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    imported = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom | ast.Import)]
    names = [
        (node.module, alias.name) if isinstance(node, ast.ImportFrom) else (alias.name, None)
        for node in imported
        for alias in node.names
        if (node.module if isinstance(node, ast.ImportFrom) else alias.name).startswith("captioning")
    ]
    assert names
    for module, name in names:
        loaded = importlib.import_module(module)
        assert name is None or hasattr(loaded, name), f"{path.name}: {module} has no {name}"


def test_quickstart_trains_captions_evaluates_and_draws(tmp_path):
    notebook = _execute("01_quickstart.ipynb", tmp_path)
    out = tmp_path / "outputs" / "notebooks" / "01_quickstart"
    assert (out / "run" / "checkpoints" / "best.ckpt").is_file()
    scores = json.loads((out / "eval" / "scores.json").read_text())
    assert scores["CIDEr"] > 0
    assert (out / "eval" / "report.html").stat().st_size > 10_000
    figures = list((out / "figures").glob("*_attention.png"))
    assert len(figures) == 1
    text = _text(notebook)
    assert "image/png" in text and f"{scores['CIDEr']:.3f}" in text  # the figure and the scores are shown


@pytest.mark.slow  # three variants trained in a kernel: about 30 s (the quickstart runs in the fast suite)
def test_attention_analysis_compares_variants_and_draws_them(tmp_path):
    notebook = _execute("02_attention_analysis.ipynb", tmp_path)
    out = tmp_path / "outputs" / "notebooks" / "02_attention_analysis"
    table = (out / "runs" / "ablation.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == ["none", "soft", "sca_cs"]
    names = {p.name for p in (out / "figures").glob("*.png")}
    assert {"gates.png"} <= names and sum(n.startswith("sca_cs_") for n in names) == 2  # spatial and channels
    assert sum(n.startswith("soft_") for n in names) == 1
    assert _text(notebook).count("image/png") >= 4


@pytest.mark.slow  # a model trained for five epochs, exported twice: about 40 s (its parts run in the fast suite)
def test_inference_notebook_captions_exports_and_runs_onnx(tmp_path):
    notebook = _execute("03_inference.ipynb", tmp_path)
    out = tmp_path / "outputs" / "notebooks" / "03_inference"
    assert {p.name for p in (out / "exported").iterdir()} == {"README.md", "config.json", "model.safetensors"}
    assert {p.name for p in (out / "onnx").iterdir()} >= {"encoder.onnx", "decoder_step.onnx", "onnx.json"}
    lines = (out / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 8 and all("caption" in json.loads(line) for line in lines[1:])  # header, 8 test images
    text = _text(notebook)
    assert "image/png" in text  # the attention figure
    assert "captions as the checkpoint: True" in text and "captions as PyTorch: True" in text
    assert "then 0 more (8 already there)" in text  # the second run resumed and had nothing left
