"""``captioning caption DIR|GLOB... --out captions.jsonl|.csv``: folders walked, unreadable files recorded and
skipped, a stopped run resumed (every image exactly once), a file of another model or other settings refused."""

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli

import captioning
from captioning.errors import CaptioningError
from captioning.workflows.inference import caption_files, image_files


@pytest.fixture(scope="module")
def model(trained_run):
    return captioning.load(trained_run["ckpt"])


@pytest.fixture
def photos(trained_run, tmp_path) -> Path:
    """A folder of 6 images (2 in a subfolder), a corrupt ``.jpg`` and a text file."""
    root = tmp_path / "photos"
    (root / "more").mkdir(parents=True)
    for i, image in enumerate(trained_run["images"]):
        shutil.copy(image, root / ("more" if i >= 4 else "") / image.name)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (root / "notes.txt").write_text("not an image")
    return root


def records(path: Path) -> tuple[dict, list[dict]]:
    header, *lines = path.read_text().splitlines()
    return json.loads(header), [json.loads(line) for line in lines]


def test_image_files_walks_folders_and_expands_globs(photos, trained_run):
    walked = image_files([photos])
    names = [image.name for image in trained_run["images"]]  # sorted
    expected = [*names[:4], "broken.jpg", *(f"more/{name}" for name in names[4:])]
    assert [p.relative_to(photos).as_posix() for p in walked] == expected
    assert image_files([f"{photos}/*.png"]) == walked[:4]
    assert image_files([f"{photos}/**/*.png"]) == [p for p in walked if p.suffix == ".png"]
    assert image_files([photos / "notes.txt", walked[1], photos]) == [
        photos / "notes.txt",
        walked[1],
        walked[0],
        *walked[2:],
    ]
    with pytest.raises(CaptioningError, match=r"missing\.png: image file or folder not found"):
        image_files([photos / "missing.png"])
    with pytest.raises(CaptioningError, match=r"\*\.gif: no image file or folder matches this pattern"):
        image_files([f"{photos}/*.gif"])


def test_a_corrupt_file_is_recorded_and_skipped_and_the_run_completes(model, photos, tmp_path, capsys, caplog):
    out = tmp_path / "captions.jsonl"
    with caplog.at_level(logging.WARNING):
        ckpt = model.config["source"]["checkpoint"]
        status, stderr = run_cli(capsys, "caption", photos, "--ckpt", ckpt, "--out", out, "--batch-size", "3")
    assert status == 0
    header, lines = records(out)
    assert header == {
        "model": {"checkpoint": model.config["source"]["checkpoint"], "fingerprint": model.fingerprint()},
        "decoding": {**model.config["decoding"]},
    }
    files = image_files([photos])
    assert [line["image"] for line in lines] == [str(f) for f in files]  # every image once, in order
    (broken,) = [line for line in lines if "error" in line]
    assert broken["image"].endswith("broken.jpg") and "cannot read image" in broken["error"]
    readable = [f for f in files if f.suffix == ".png"]
    expected = model.caption(readable)
    captioned = [line for line in lines if "caption" in line]
    assert [line["caption"] for line in captioned] == [r.caption for r in expected]
    assert all(abs(line["score"] - r.score) < 1e-4 for line, r in zip(captioned, expected, strict=True))  # batches
    assert "6 images captioned, 0 already there" in stderr and "1 unreadable images skipped" in stderr
    assert f"{photos / 'broken.jpg'}: cannot read image" in stderr
    assert any("broken.jpg" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_stopped_run_resumes_and_ends_with_every_image_exactly_once(model, photos, tmp_path, suffix):
    files = image_files([photos])
    complete = tmp_path / f"complete{suffix}"
    first = caption_files(model, files, complete, batch_size=4, progress=False)
    assert (first.captioned, first.already, [image for image, _ in first.failed]) == (
        6,
        0,
        [str(photos / "broken.jpg")],
    )
    text = complete.read_text()

    stopped = tmp_path / f"stopped{suffix}"
    if suffix == ".csv":
        shutil.copy(complete.with_suffix(".meta.json"), stopped.with_suffix(".meta.json"))
    lines = text.splitlines(keepends=True)
    stopped.write_text("".join(lines[:4]) + lines[4][:7])  # header and 3 records, then a record cut mid-line
    resumed = caption_files(model, files, stopped, batch_size=4, progress=False)
    assert (resumed.captioned, resumed.already) == (3, 3)  # the cut record is redone: 4 images with broken.jpg
    assert len(resumed.failed) == 1
    assert_same_rows(stopped, complete)  # as if it had never stopped

    again = caption_files(model, files, stopped, batch_size=4, progress=False)
    assert (again.captioned, again.already, again.failed) == (0, 7, [])
    assert_same_rows(stopped, complete)


def _rows(path: Path) -> list[tuple[str, str, float | None]]:
    """(image, caption or error, score) per record."""
    if path.suffix == ".jsonl":
        return [(r["image"], r.get("caption", r.get("error")), r.get("score")) for r in records(path)[1]]
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    return [(r["image"], r["caption"] or r["error"], float(r["score"]) if r["score"] else None) for r in rows]


def assert_same_rows(path: Path, expected: Path) -> None:
    """The same records; scores within 1e-4: a resumed run batches the images otherwise, which moves a score by a few
    float32 ulps."""
    ours, theirs = _rows(path), _rows(expected)
    assert [row[:2] for row in ours] == [row[:2] for row in theirs]
    for (_, _, a), (_, _, b) in zip(ours, theirs, strict=True):
        assert (a is None and b is None) or abs(a - b) < 1e-4


def test_csv_output_has_a_header_row_and_its_model_in_a_sidecar(model, photos, tmp_path, capsys):
    out = tmp_path / "captions.csv"
    ckpt = model.config["source"]["checkpoint"]
    status, _ = run_cli(capsys, "caption", f"{photos}/**/*.png", photos / "broken.jpg", "--ckpt", ckpt, "--out", out)
    assert status == 0
    with out.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["image", "caption", "score", "error"] and len(rows) == 7
    assert [r["caption"] for r in rows[:6]] == [r.caption for r in model.caption(image_files([f"{photos}/**/*.png"]))]
    assert rows[6]["image"].endswith("broken.jpg") and rows[6]["caption"] == "" and "cannot read" in rows[6]["error"]
    meta = json.loads((tmp_path / "captions.meta.json").read_text())
    assert meta["model"]["fingerprint"] == model.fingerprint() and meta["decoding"]["beam_size"] == 1


def test_a_file_of_another_model_or_other_settings_is_refused(model, photos, tmp_path, capsys):
    out = tmp_path / "captions.jsonl"
    files = image_files([photos])[:2]
    caption_files(model, files, out, progress=False)
    before = out.read_text()

    ckpt = model.config["source"]["checkpoint"]
    status, stderr = run_cli(capsys, "caption", *files, "--ckpt", ckpt, "--out", out, "--beam-size", "2")
    assert status == 2
    assert stderr.strip() == (
        f"captioning: error: {out}: written with other decoding settings (beam_size 1, now 2); "
        "write to a new file or use its settings"
    )

    other = captioning.load(ckpt)
    with torch.no_grad():
        next(other.captioner.parameters()).add_(1e-3)  # another model: the same architecture, other weights
    with pytest.raises(CaptioningError, match="written by another model") as error:
        caption_files(other, files, out, progress=False)
    assert str(out) in str(error.value) and "\n" not in str(error.value)
    assert out.read_text() == before  # nothing appended


def test_a_file_that_is_not_a_captions_file_is_never_overwritten(model, photos, tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("someone's notes, no newline")
    with pytest.raises(CaptioningError, match=r"notes\.csv: not a captions file \(no complete line\)"):
        caption_files(model, image_files([photos]), notes, progress=False)
    assert notes.read_text() == "someone's notes, no newline" and not (tmp_path / "notes.meta.json").exists()
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(CaptioningError, match=r"folder\.jsonl: cannot read it as a captions file"):
        caption_files(model, image_files([photos]), tmp_path / "folder.jsonl", progress=False)


def test_a_resumed_run_knows_an_image_by_its_file_not_by_how_its_path_was_written(model, photos, tmp_path, monkeypatch):
    out = tmp_path / "captions.jsonl"
    monkeypatch.chdir(photos)
    first = caption_files(model, image_files(["."]), out, progress=False)  # relative paths
    again = caption_files(model, image_files([photos]), out, progress=False)  # the same files, absolute paths
    assert first.captioned == 6 and again.captioned == 0 and again.already == 7  # 6 images and the broken one
    assert len(records(out)[1]) == 7
    globbed = image_files([f"{photos}/*"])  # a glob keeps image files and folders: notes.txt is dropped
    assert globbed == image_files([photos]) and all(p.suffix != ".txt" for p in globbed)
