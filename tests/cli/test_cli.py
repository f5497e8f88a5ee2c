"""End to end through the command line: prepare, fit (LightningCLI), checkpoint round trip, evaluate, caption,
visualize, and one-line errors for user mistakes."""

import contextlib
import html
import io
import json
import subprocess
import sys
from math import nan
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from PIL import Image
from torch.utils.data import DistributedSampler

from captioning.checkpoints import load_checkpoint
from captioning.cli import main
from captioning.cli.visualize import main as main_visualize
from captioning.config import run_config
from captioning.data.shapes import generate_shapes
from captioning.metrics import coco_scores, spice_unavailable
from captioning.viz.attention import word_grid
from captioning.workflows import caption_images
from captioning.workflows.ablation import HEADER, write_tables

CAPTIONING = [sys.executable, "-m", "captioning.cli"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, train=48, val=8, test=7, seed=3, image_size=64, show_progress=False)
    return root


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    args = ["--config", str(ROOT / "configs/smoke.yaml"), "--data.root", str(shapes)]
    args += [
        "--trainer.default_root_dir",
        str(out),
        "--checkpoint.dirpath",
        str(out / "ckpt"),
        "--trainer.max_epochs",
        "6",
    ]
    initial = run_config(["validate", *args[:4], "--trainer.limit_val_batches", "0"])  # an untrained twin, same seed
    batch = next(iter(initial.datamodule.train_dataloader()))
    with torch.no_grad():  # eval mode: measuring must not move the BN statistics of the trained model
        before = float(initial.model.eval().loss(batch)["xe"])
    cli = run_config(["fit", *args])
    with torch.no_grad():
        after = float(cli.model.eval().loss(batch)["xe"])
    return {"out": out, "cli": cli, "before": before, "after": after, "shapes": shapes}


@pytest.fixture(scope="module")
def evaluated(run, tmp_path_factory) -> dict:
    """``captioning evaluate --report`` of the trained model on the test split, once for the tests that read it: its
    folder and what it printed."""
    out = tmp_path_factory.mktemp("evaluated")
    ckpt = str(run["out"] / "ckpt" / "best.ckpt")
    args = ["evaluate", "--ckpt", ckpt, "--data-root", str(run["shapes"]), "--split", "test", "--no-spice", "--report"]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        main([*args, "--out", str(out)])
    return {"out": out, "printed": printed.getvalue(), "ckpt": ckpt}


def test_fit_learns_and_writes_checkpoints_vocab_and_config(run):
    assert run["after"] < 0.75 * run["before"]
    out = run["out"]
    assert (out / "ckpt" / "best.ckpt").is_file()
    log_dir = Path(run["cli"].trainer.log_dir)
    assert json.loads((log_dir / "vocab.json").read_text())["words"] == run["cli"].datamodule.vocab.words
    assert (log_dir / "config.yaml").is_file()
    metrics = run["cli"].trainer.callback_metrics
    assert {"val/Bleu_4", "val/ROUGE_L", "val/CIDEr"} <= set(metrics)


def test_checkpoint_round_trip_gives_identical_greedy_captions(run, tmp_path):
    trained = run["cli"].model.eval()
    run["cli"].trainer.save_checkpoint(tmp_path / "final.ckpt")
    loaded = load_checkpoint(tmp_path / "final.ckpt")
    assert loaded.vocab.words == trained.vocab.words  # the vocabulary travels inside the checkpoint
    images = next(iter(run["cli"].datamodule.test_dataloader())).images
    expected, _ = trained.generate(images)
    got, _ = loaded.generate(images)
    assert got == expected and all(isinstance(c, str) for c in got)
    assert any(c for c in got)


def test_evaluate_writes_results_and_scores(run, evaluated):
    out = evaluated["out"]
    results = json.loads((out / "results.json").read_text())
    scores = json.loads((out / "scores.json").read_text())
    assert sorted(r["image_id"] for r in results) == sorted({r["image_id"] for r in results})
    assert len(results) == 7
    assert {"Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"} <= set(scores)
    vocabulary = {"size": len(run["cli"].datamodule.vocab), "counted": "train", "min_count": 1}  # linked by fit
    assert scores["vocabulary"] == vocabulary and scores["decoding"]["beam_size"] == 1
    printed = evaluated["printed"]
    assert f'"CIDEr": {scores["CIDEr"]}' in printed  # the scores are printed too, and the grounding table
    assert "| attended layer | pointing game |" in printed and "\n| soft | " in printed
    per_image = json.loads((out / "per_image.json").read_text())
    assert len(per_image) == 7
    assert np.mean([s["CIDEr"] for s in per_image.values()]) == pytest.approx(scores["CIDEr"])
    grounding = json.loads((out / "grounding.json").read_text())  # shapes has boxes: grounding is scored
    assert set(grounding) >= {"pointing.soft", "mass.soft", "area.soft", "object_words", "absent_object_words"}
    if grounding["object_words"]:  # null when no caption of this barely trained model names an object it shows
        assert 0 <= grounding["pointing.soft"] <= 1 and 0 < grounding["area.soft"] < 1
    present = sum(v for k, v in grounding.items() if k.startswith("present."))  # object naming, per category
    assert present >= 7 and grounding["one_object_images"] <= 7  # every test image shows at least one shape
    assert "Object naming: " in printed and "| category | named | present |" in printed


def test_evaluate_reads_the_karpathy_layout_by_flags_or_data_config(run, evaluated, tmp_path, capsys):
    """The shapes set also ships its split as a Karpathy file: the same test images and references, the same scores."""
    ckpt = evaluated["ckpt"]
    common = ["evaluate", "--ckpt", ckpt, "--split", "test", "--no-spice"]
    karpathy = ["--annotations", "karpathy", "--annotation-file", "dataset_shapes.json"]
    main([*common, "--data-root", str(run["shapes"]), *karpathy, "--out", str(tmp_path / "flags")])
    config = tmp_path / "shapes_karpathy.yaml"
    config.write_text(
        f"data:\n  root: {run['shapes']}\n  annotations: karpathy\n  annotation_file: dataset_shapes.json\n"
        "  batch_size: 2\n  image_size: 32\n"  # not layout keys: evaluate takes the checkpoint's image size
    )
    main([*common, "--data-config", str(config), "--out", str(tmp_path / "config")])
    scores = [
        json.loads((d / "scores.json").read_text()) for d in (evaluated["out"], tmp_path / "flags", tmp_path / "config")
    ]
    assert scores[0] == scores[1] == scores[2]
    status, stderr = run_cli(capsys, "evaluate", "--ckpt", ckpt, "--out", str(tmp_path / "none"))
    assert status == 2 and "needs --data-root" in stderr


def test_predict_writes_one_caption_per_test_image(run, tmp_path):
    args = ["predict", "--config", str(ROOT / "configs/smoke.yaml"), "--data.root", str(run["shapes"])]
    args += ["--ckpt_path", str(run["out"] / "ckpt" / "best.ckpt"), "--predictions.output", str(tmp_path / "p.json")]
    run_config(args)
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [r["image_id"] for r in rows] == sorted(r.image_id for r in run["cli"].datamodule.records("test"))
    assert all(isinstance(r["caption"], str) for r in rows)


def test_averaging_per_rank_cider_would_differ_from_the_split_score(run, evaluated):
    """Why the evaluator gathers captions: CIDEr-D's IDF is a corpus statistic, so the mean of the two ranks'
    scores (over DistributedSampler's shards of the 7 images, one padded twice) is not the split's score."""
    split = json.loads((evaluated["out"] / "scores.json").read_text())["CIDEr"]
    captions = {r["image_id"]: r["caption"] for r in json.loads((evaluated["out"] / "results.json").read_text())}
    references = {r.image_id: list(r.captions) for r in run["cli"].datamodule.records("test")}
    ids = sorted(references)  # the test loader's order
    sampler = [list(DistributedSampler(ids, num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert sampler[1][-1] == sampler[0][0]  # 7 images over 2 ranks: the first one is repeated as padding
    per_rank = [
        coco_scores(
            {ids[i]: captions[ids[i]] for i in shard}, {ids[i]: references[ids[i]] for i in shard}, metrics=("CIDEr",)
        )[0]
        for shard in sampler
    ]
    averaged = np.mean([s["CIDEr"] for s in per_rank])
    assert abs(averaged - split) > 1e-3


def test_score_command_scores_a_results_file(run, tmp_path, capsys):
    shapes = run["shapes"]
    records = run["cli"].datamodule.records("test")
    predictions = [{"image_id": r.image_id, "caption": r.captions[0]} for r in records]
    (tmp_path / "pred.json").write_text(json.dumps(predictions))
    main(["score", str(shapes / "captions_test.json"), str(tmp_path / "pred.json"), "--out", str(tmp_path / "s.json")])
    scores = json.loads((tmp_path / "s.json").read_text())
    expected, _ = coco_scores(
        {r.image_id: r.captions[0] for r in records}, {r.image_id: list(r.captions) for r in records}
    )
    assert scores == expected
    assert scores["Bleu_1"] > 0.99  # each candidate is one of its own references
    captured = capsys.readouterr()
    assert f'"CIDEr": {scores["CIDEr"]}' in captured.out
    if spice_unavailable():  # the usual case (SPICE's parser jars are a separate download): one line, nothing lost
        assert [line for line in captured.err.splitlines() if "SPICE" in line] == [spice_unavailable()]

    (tmp_path / "broken.json").write_text('[{"image_id": 1, "caption": "a"},\n {"image_id": 2 "caption": "b"}]')
    status, stderr = run_cli(capsys, "score", str(shapes / "captions_test.json"), str(tmp_path / "broken.json"))
    assert status == 2
    assert "broken.json: not valid JSON (line 2, column" in stderr and "Traceback" not in stderr
    (tmp_path / "unknown.json").write_text(json.dumps([*predictions, {"image_id": 987654, "caption": "a shape"}]))
    status, stderr = run_cli(capsys, "score", str(shapes / "captions_test.json"), str(tmp_path / "unknown.json"))
    assert status == 2  # an image of the results without references (fewer images are scored: test_score)
    assert "no reference captions for 1 of the 8 images to score (image ids 987654)" in stderr


def test_caption_and_visualize_a_shapes_image_and_a_real_photo(run, tmp_path, capsys):
    from skimage import data

    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo)
    shape_image = sorted((run["shapes"] / "images" / "test").glob("*.png"))[0]
    ckpt = str(run["out"] / "ckpt" / "best.ckpt")
    main(["caption", str(shape_image), str(photo), "--ckpt", ckpt])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(shape_image), str(photo)]
    main(["caption", str(photo), "--ckpt", ckpt, "--json", "--beam-size", "3"])
    assert json.loads(capsys.readouterr().out)[0]["image"] == str(photo)

    written = main_visualize([str(shape_image), str(photo), "--ckpt", ckpt, "--out", str(tmp_path / "viz")])
    assert [p.name for p in written] == [f"{shape_image.stem}_attention.png", "astronaut_attention.png"]
    items = caption_images(load_checkpoint(ckpt), [shape_image, photo])
    for png, item in zip(written, items, strict=True):
        grid, _ = word_grid(len(item.words), 1, 9)
        assert Image.open(png).size == grid.size_pixels  # the input panel and one panel per word
        maps = item.attention["alpha"]  # (T, N): each word its own map (this barely trained model's are nearly flat;
        assert (maps[1:] - maps[:1]).abs().max() > 1e-5  # test_viz shows that the panels draw each word's map)
        assert torch.allclose(maps.sum(dim=1), torch.ones(len(item.words)))

    twin = tmp_path / "other" / "astronaut.jpg"  # the same file name in another folder: its own figures
    twin.parent.mkdir()
    twin.write_bytes(photo.read_bytes())
    pair = main_visualize([str(photo), str(twin), "--ckpt", ckpt, "--out", str(tmp_path / "pair")])
    assert [p.name for p in pair] == ["astronaut_1_attention.png", "astronaut_2_attention.png"]
    with pytest.raises(SystemExit):  # argparse: one line, exit 2
        main_visualize([str(photo), "--ckpt", ckpt, "--out", str(tmp_path / "k"), "--top-k", "0"])

    gates = main_visualize(
        [str(photo), "--ckpt", ckpt, "--out", str(tmp_path / "g"), "--gates", "layer1.0", "layer4.1"]
    )
    assert [p.name for p in gates] == ["astronaut_attention.png", "astronaut_gates.png"]
    assert Image.open(gates[1]).size[0] > 200


def test_evaluate_report_is_one_page_with_every_image(run, evaluated, tmp_path):
    ckpt = evaluated["ckpt"]
    common = ["evaluate", "--ckpt", ckpt, "--data-root", str(run["shapes"]), "--split", "test", "--report"]
    page = (evaluated["out"] / "report.html").read_text()
    results = json.loads((evaluated["out"] / "results.json").read_text())
    scores = json.loads((evaluated["out"] / "scores.json").read_text())
    assert page.count('<tr><td class="num" data-value=') == 7
    assert all(html.escape(r["caption"]) in page for r in results)
    assert f"<td>{scores['CIDEr']:.3f}</td>" in page and "All 7 images of the split." in page
    assert page.count("data:image/jpeg;base64,") == 14  # a picture and an attention strip per image
    assert 'class="note"' not in page  # the report's re-run generated the evaluated captions

    main(
        [*common, "--no-spice", "--out", str(tmp_path / "three"), "--report-max", "3"]
    )  # worst, middle and best by CIDEr-D
    per_image = json.loads((tmp_path / "three" / "per_image.json").read_text())
    ranked = sorted(per_image, key=lambda i: (per_image[i]["CIDEr"], int(i)))
    page = (tmp_path / "three" / "report.html").read_text()
    shown = {i for i in per_image if f'<td class="num" data-value="{i}">' in page}
    assert len(shown) == 3 and {ranked[0], ranked[-1]} <= shown
    assert "3 of the split's 7 images" in page


def test_user_errors_are_one_line_without_traceback(run, tmp_path, capsys):
    ckpt = str(run["out"] / "ckpt" / "best.ckpt")
    missing = tmp_path / "missing.png"
    console = subprocess.run(  # once through a real process: `python -m captioning.cli`, what the console script runs
        [*CAPTIONING, "caption", str(missing), "--ckpt", ckpt], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert console.returncode == 2 and console.stderr.strip().count("\n") == 0
    assert "Traceback" not in console.stderr and str(missing) in console.stderr and "not found" in console.stderr
    corrupt = tmp_path / "broken.jpg"
    buffer = tmp_path / "ok.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer)
    corrupt.write_bytes(buffer.read_bytes()[:60])  # a truncated JPEG
    for image, problem in ((missing, "not found"), (corrupt, "cannot read image")):
        status, stderr = run_cli(capsys, "caption", str(image), "--ckpt", ckpt)
        assert status == 2
        assert stderr.strip().count("\n") == 0 and "Traceback" not in stderr
        assert str(image) in stderr and problem in stderr
    status, stderr = run_cli(capsys, "caption", str(buffer), "--ckpt", str(tmp_path / "nope.ckpt"))
    assert status == 2 and "checkpoint not found" in stderr
    data = ("--data.root", str(run["shapes"]))
    status, stderr = run_cli(
        capsys, "fit", "--config", str(ROOT / "configs/smoke.yaml"), *data, "--model.encoder.depth", "20"
    )
    assert status == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "captioning: error: encoder depth must be one of [18, 34, 50, 101, 152] for arch resnet, got 20"
    )


def test_untrusted_checkpoint_is_refused(tmp_path):
    import collections

    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": collections.OrderedDict(x=print)}, bad)
    from captioning.errors import CaptioningError

    with pytest.raises(CaptioningError, match="not a readable captioning checkpoint"):
        load_checkpoint(bad)


def test_prepare_command_writes_the_contract_files(tmp_path, capsys):
    main(
        ["prepare", "shapes", "--out", str(tmp_path), "--train", "3", "--val", "2", "--test", "2", "--image-size", "48"]
    )
    for split in ("train", "val", "test"):
        assert (tmp_path / f"captions_{split}.json").is_file() and (tmp_path / f"instances_{split}.json").is_file()
    assert (tmp_path / "dataset_shapes.json").is_file()
    assert Image.open(next((tmp_path / "images" / "val").glob("*.png"))).size == (48, 48)
    assert "3 train" in capsys.readouterr().out


def test_wandb_offline_and_csv_loggers_record_the_run(shapes, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # never reach the network, whatever the config says
    monkeypatch.setenv("WANDB_SILENT", "true")
    base = ["fit", "--config", str(ROOT / "configs/smoke.yaml"), "--data.root", str(shapes)]
    base += ["--trainer.max_epochs", "1", "--checkpoint.dirpath", str(tmp_path / "ckpt")]
    run_config(
        [*base, "--config", str(ROOT / "configs/wandb.yaml"), "--trainer.logger.init_args.save_dir", str(tmp_path)]
    )
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    # the run directory holds the sample table and the attention figures of the validation
    media = {p.relative_to(runs[0] / "files" / "media").as_posix() for p in (runs[0] / "files" / "media").rglob("*.*")}
    assert any(m.startswith("table/val/samples") for m in media), media
    assert any(m.startswith("images/val/attention") and m.endswith(".png") for m in media), media
    history = next(runs[0].glob("*.wandb")).read_bytes()  # flushed when fit finished the run (protobuf records)
    assert b"val/CIDEr" in history and b"val/samples" in history
    run_config(
        [*base, "--config", str(ROOT / "configs/csv.yaml"), "--trainer.logger.init_args.save_dir", str(tmp_path)]
    )
    rows = (next(tmp_path.glob("lightning_logs/version_*")) / "metrics.csv").read_text()
    assert "val/CIDEr" in rows.splitlines()[0] and "train/loss" in rows.splitlines()[0]


def test_ablation_tables_show_the_right_object_rate_after_cider(tmp_path):
    scores = dict.fromkeys(HEADER[3:-4], 0.5)  # BLEU-1 .. CIDEr-D
    rows = [
        {"variant": "soft", "params": 2.5e6, "train_s": 12.0, **scores, "right_object": 0.25}
        | {"pointing": 0.75, "mass": 0.5, "area": 0.125},
        {"variant": "none", "params": 2e6, "train_s": 10.0, **scores, "right_object": 0.25}
        | dict.fromkeys(("pointing", "mass", "area"), nan),  # naming is measured without attention
        {"variant": "no boxes", "params": 2e6, "train_s": 10.0, **scores} | dict.fromkeys(HEADER[-4:], nan),
    ]
    write_tables(rows, tmp_path)
    header, *lines = (tmp_path / "ablation.csv").read_text().splitlines()
    assert header.endswith("ROUGE_L,CIDEr,right_object,pointing,mass,area")
    assert lines[0].endswith(",0.5,0.25,0.75,0.5,0.125") and lines[1].endswith(",0.5,0.25,nan,nan,nan")
    table = (tmp_path / "ablation.md").read_text().splitlines()
    assert table[0].endswith("| CIDEr | right_object | pointing | mass | area |")
    assert table[2] == "| soft | 2.50M | 12 | " + "0.500 | " * 7 + "0.250 | 0.750 | 0.500 | 0.125 |"
    assert table[3].endswith("| 0.500 | 0.250 | - | - | - |") and table[4].endswith("| 0.500 | - | - | - | - |")


def test_ablate_trains_and_scores_every_variant(shapes, tmp_path, capsys):
    variants = [str(ROOT / "configs/ablation" / f"{name}.yaml") for name in ("none", "sca_cs")]
    args = ["--out", str(tmp_path), "--data.root", str(shapes), "--trainer.max_epochs", "1"]
    main(["ablate", "--config", str(ROOT / "configs/smoke.yaml"), "--variants", *variants, *args])
    header, *lines = (tmp_path / "ablation.csv").read_text().splitlines()
    assert header.split(",")[:4] == ["variant", "params", "train_s", "Bleu_1"]
    assert header.endswith("CIDEr,right_object,pointing,mass,area")
    assert [line.split(",")[0] for line in lines] == ["none", "sca_cs"]
    assert lines[0].endswith("nan,nan,nan")  # no spatial attention: no grounding
    naming = json.loads((tmp_path / "none" / "grounding.json").read_text())  # but object naming without attention
    assert naming["one_object_images"] > 0 and any(k.startswith("present.") for k in naming)
    assert float(lines[0].split(",")[-4]) == pytest.approx(naming["right_object"])
    grounding = json.loads((tmp_path / "sca_cs" / "grounding.json").read_text())  # both attended layers are scored
    assert {"pointing.layer4.1.conv1", "pointing.layer4", "mass.layer4", "area.layer4"} <= set(grounding)
    table = (tmp_path / "ablation.md").read_text()
    assert "| sca_cs |" in table and table in capsys.readouterr().out
    assert int(lines[1].split(",")[1]) > int(lines[0].split(",")[1])  # SCA adds attention parameters
