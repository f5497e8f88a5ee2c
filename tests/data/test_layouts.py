"""Real-dataset layouts on tiny folders with every kind of bad data: readers (COCO, Karpathy, custom), ``prepare``,
the configs, and a training epoch that skips and counts unreadable images."""

import csv
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from bad_data import (
    BAD,
    BAD_TRAIN,
    CAPTIONLESS,
    CAPTIONS,
    EMPTY_CAPTIONS,
    LONG,
    SPLIT_OF,
    karpathy_json,
    write_coco,
    write_custom,
    write_karpathy,
)
from conftest import ROOT, run_cli

from captioning.config import run_config
from captioning.data.coco import read_coco_captions, read_karpathy
from captioning.data.custom import hashed_split, read_custom
from captioning.data.datamodule import CaptionDataModule
from captioning.data.layouts import LAYOUTS
from captioning.data.prepare import prepare_dataset
from captioning.data.records import DataWarning
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

KEPT = [n for n in CAPTIONS if n not in CAPTIONLESS]


def _by_name(records):
    return {r.path.name: r for r in records}


def _assert_records(records):
    """The fixtures' records, whatever the format: splits, cleaned captions, odd text kept."""
    got = _by_name(records)
    assert sorted(got) == sorted(KEPT)
    for name, record in got.items():
        assert record.split == SPLIT_OF[name]
        assert record.captions == tuple(c for c in CAPTIONS[name] if c.strip() and c != "...")
    assert got["cmyk.jpg"].captions[0] == "a café with crème brûlée"
    assert len({r.image_id for r in records}) == len(records)


def test_coco_karpathy_and_custom_readers_give_the_same_records(tmp_path):
    write_coco(tmp_path / "coco")
    write_karpathy(tmp_path / "flickr")
    write_custom(tmp_path / "csv")
    write_custom(tmp_path / "jsonl", jsonl=True)
    message = f"dropped {EMPTY_CAPTIONS} empty caption\\(s\\); {len(CAPTIONLESS)} image\\(s\\) left without a caption"
    with pytest.warns(DataWarning, match=message):
        _assert_records(read_karpathy(tmp_path / "flickr/dataset_flickr8k.json", tmp_path / "flickr/Flicker8k_Dataset"))
    with pytest.warns(DataWarning, match="captions.csv: dropped"):
        _assert_records(read_custom(tmp_path / "csv"))
    with pytest.warns(DataWarning, match="captions.jsonl: dropped"):
        _assert_records(read_custom(tmp_path / "jsonl"))
    with pytest.warns(DataWarning):
        coco = [
            r
            for split in ("train", "val", "test")
            for r in read_coco_captions(tmp_path / f"coco/captions_{split}.json", tmp_path / "coco/images", split=split)
        ]
    _assert_records(coco)


def test_long_and_non_ascii_captions_encode(tmp_path):
    vocab = Vocabulary.build(["a café with crème brûlée", LONG])
    assert vocab.decode(vocab.encode("a café with crème brûlée", max_len=16)) == "a café with crème brûlée"
    assert len(vocab.encode(LONG, max_len=16)) == 16 + 2  # clipped to max_len words, plus <bos> and <eos>


def test_custom_folder_without_split_column_splits_by_file_name_hash(tmp_path):
    write_custom(tmp_path, with_split=False)
    with pytest.warns(DataWarning):
        records = read_custom(tmp_path, val_fraction=0.3, test_fraction=0.3)
    for record in records:
        name = f"photos/{record.path.name}"
        assert record.split == hashed_split(name, val_fraction=0.3, test_fraction=0.3)
    splits = [hashed_split(f"img_{i}.jpg", val_fraction=0.05, test_fraction=0.05) for i in range(4000)]
    assert 0.04 < splits.count("val") / 4000 < 0.06 and 0.04 < splits.count("test") / 4000 < 0.06
    position = {name: i for i, name in enumerate(sorted(CAPTIONS), start=1)}  # ids: places of the files, sorted
    assert all(r.image_id == position[r.path.name] for r in records)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("file,text\na.jpg,hello\n", r"captions\.csv: line 1: the header needs columns .* missing \['caption'\]"),
        ("file,caption,split\na.jpg,hello,train\nb.jpg,hi,dev\n", r"captions\.csv: line 3: split 'dev'"),
        ("file,caption,split\na.jpg,hello,train\na.jpg,hi,val\n", r"captions\.csv: line 3: a\.jpg was given split"),
        ("file,caption\n,hello\n", r"captions\.csv: line 2: empty or missing 'file'"),
    ],
)
def test_malformed_custom_csv_names_the_line(tmp_path, text, problem):
    (tmp_path / "captions.csv").write_text(text)
    with pytest.raises(CaptioningError, match=problem):
        read_custom(tmp_path)


def test_malformed_jsonl_and_both_caption_files(tmp_path):
    (tmp_path / "captions.jsonl").write_text('{"file": "a.jpg", "caption": "x"}\n{"file": "b.jpg", "caption": }\n')
    with pytest.raises(CaptioningError, match=r"captions\.jsonl: line 2, column 30: not valid JSON"):
        read_custom(tmp_path)
    (tmp_path / "captions.csv").write_text("file,caption\n")
    with pytest.raises(CaptioningError, match=r"both captions\.csv and captions\.jsonl"):
        read_custom(tmp_path)


def test_duplicate_image_ids_and_structural_errors_name_the_entry(tmp_path):
    data = karpathy_json(["rgb.jpg", "gray.jpg"])
    data["images"][1]["imgid"] = 1
    (tmp_path / "k.json").write_text(json.dumps(data))
    with pytest.raises(CaptioningError, match=r"k\.json: .*images\[1\] repeats image id 1 \(first at images\[0\]\)"):
        read_karpathy(tmp_path / "k.json", tmp_path)
    coco = {
        "images": [{"id": 5, "file_name": "a.jpg"}, {"id": 5, "file_name": "b.jpg"}],
        "annotations": [{"id": 1, "image_id": 5, "caption": "x"}],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with pytest.raises(CaptioningError, match=r"c\.json: images\[1\] repeats image id 5"):
        read_coco_captions(tmp_path / "c.json", tmp_path, split="train")
    coco["images"] = coco["images"][:1]
    coco["annotations"].append({"id": 2, "image_id": 6, "caption": "y"})
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with pytest.raises(CaptioningError, match=r"c\.json: annotations\[1\] refers to image_id 6"):
        read_coco_captions(tmp_path / "c.json", tmp_path, split="train")


def test_malformed_json_fails_in_one_line_naming_file_and_position(tmp_path, capsys):
    write_karpathy(tmp_path, file="dataset_coco.json", image_dir="train2014")
    (tmp_path / "val2014").mkdir()
    (tmp_path / "dataset_coco.json").write_text('{"images": [\n  {"filename": "a.jpg",\n   "split": train}\n]}\n')
    status, stderr = run_cli(capsys, "prepare", "coco", "--root", str(tmp_path))
    assert status == 2
    assert stderr.strip().splitlines() == [
        f"captioning: error: {tmp_path / 'dataset_coco.json'}: not valid JSON (line 3, column 13: Expecting value)"
    ]


def test_prepare_coco_on_an_empty_folder_says_what_to_fetch(tmp_path, capsys):
    status, stderr = run_cli(capsys, "prepare", "coco", "--root", str(tmp_path))
    assert status == 2 and "Traceback" not in stderr
    for needed in ("dataset_coco.json", "caption_datasets.zip", "train2014/", "train2014.zip", "val2014.zip"):
        assert needed in stderr
    status, stderr = run_cli(capsys, "prepare", "coco2017", "--root", str(tmp_path))
    assert "annotations/captions_train2017.json" in stderr and "annotations_trainval2017.zip" in stderr
    assert status == 2 and "Traceback" not in stderr  # (as a real process: tests/cli/test_cli.py)


@pytest.mark.parametrize("kind", ["flickr8k", "custom", "coco2014"])
def test_prepare_reports_every_bad_file_and_writes_vocab_and_manifest(tmp_path, kind):
    root = tmp_path / kind
    if kind == "flickr8k":
        write_karpathy(root)
    elif kind == "custom":
        write_custom(root)
    else:
        _write_official_coco(root)
    report = prepare_dataset(kind, root, out=tmp_path / "out", workers=2, min_count=1)
    # official COCO has no captioned test split: the coco2014 layout reads val2014 as both val and test
    splits_of = {n: ("val,test" if kind == "coco2014" and s != "train" else s) for n, s in SPLIT_OF.items()}
    bad = {
        Path(row["path"]).name: row for row in csv.DictReader((tmp_path / "out/bad_images.tsv").open(), delimiter="\t")
    }
    assert set(bad) == set(BAD)
    assert all(row["split"] == splits_of[name] and name in row["problem"] for name, row in bad.items())
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    kept_in = {s: [n for n in KEPT if s in splits_of[n].split(",")] for s in ("train", "val", "test")}
    for split, names in kept_in.items():
        assert manifest["splits"][split]["images"] == len(names)
        assert manifest["splits"][split]["unreadable"] == sum(n in BAD for n in names)
    assert any("empty caption" in w for w in manifest["annotation_warnings"])
    assert all(len(digest) == 64 for digest in manifest["annotation_files"].values())
    # images.sha256 verifies with the standard tool
    check = subprocess.run(["sha256sum", "--quiet", "-c", str(tmp_path / "out/images.sha256")], cwd=root)
    assert check.returncode == 0
    # the vocabulary counts the train split only: "zebra" is in a val caption
    words = Vocabulary.load(tmp_path / "out/vocab.json").words
    assert "red" in words and "zebra" not in words and len(report.vocabulary) == len(words)
    every = prepare_dataset(kind, root, out=tmp_path / "all", workers=0, min_count=1, vocab_from="all")
    assert "zebra" in every.vocabulary.words
    summary = report.summary(kind, root)
    assert f"{len(BAD)} unreadable" in summary and "CMYK 1" in summary and "I;16 1" in summary


def _write_official_coco(root: Path) -> None:
    """coco2014 layout: annotations/captions_{train,val}2014.json, train2014/, val2014/ (val also holds 'test')."""
    write_coco(root / "flat")
    for split, folder in (("train", "train2014"), ("val", "val2014")):
        data = json.loads((root / f"flat/captions_{split}.json").read_text())
        if split == "val":  # the test images join val: official COCO has no captioned test split
            test = json.loads((root / "flat/captions_test.json").read_text())
            data = {k: data[k] + test[k] for k in ("images", "annotations")}
        (root / "annotations").mkdir(exist_ok=True)
        (root / f"annotations/captions_{folder}.json").write_text(json.dumps(data))
        (root / folder).mkdir()
        for image in data["images"]:
            source = root / "flat/images" / image["file_name"]
            if source.exists():
                source.rename(root / folder / image["file_name"])


def test_data_configs_match_the_layouts_prepare_checks():
    for name, layout in LAYOUTS.items():
        data = yaml.safe_load((ROOT / f"configs/data/{name}.yaml").read_text())["data"]
        assert {k: v for k, v in data.items() if k != "root"} == layout.data_settings(), name


def test_flickr8k_config_reads_a_flickr8k_folder(tmp_path):
    write_karpathy(tmp_path)
    data = yaml.safe_load((ROOT / "configs/data/flickr8k.yaml").read_text())["data"]
    with pytest.warns(DataWarning):
        module = CaptionDataModule(**{**data, "root": str(tmp_path)}, image_size=32, batch_size=4, num_workers=0)
    assert [r.path.name for r in module.records("val")] == [n for n in KEPT if SPLIT_OF[n] == "val"]
    assert module.image_cache is None
    # a cache that prepare built in the dataset folder is found on its own, at the module's image size only
    prepare_dataset("flickr8k", tmp_path, workers=0, min_count=1, cache_size=32)  # (its report holds the warnings)
    settings = {**data, "root": str(tmp_path), "batch_size": 4, "num_workers": 0}
    with pytest.warns(DataWarning):
        cached = CaptionDataModule(**settings, image_size=32)
    assert cached.image_cache is not None and len(cached.image_cache) == len(CAPTIONS) - len(CAPTIONLESS)
    assert cached.dataset("train").image_cache is cached.image_cache
    with pytest.warns(DataWarning):
        assert CaptionDataModule(**settings, image_size=64).image_cache is None
    with pytest.warns(DataWarning):
        assert CaptionDataModule(**settings, image_size=32, image_cache="none").image_cache is None


def test_one_epoch_over_bad_files_completes_and_logs_the_skipped_count(tmp_path):
    write_karpathy(tmp_path / "data")
    args = ["fit", "--config", str(ROOT / "configs/smoke.yaml"), "--data.root", str(tmp_path / "data")]
    args += ["--data.annotations", "karpathy", "--data.annotation_file", "dataset_flickr8k.json"]
    args += ["--data.image_dir", "Flicker8k_Dataset", "--trainer.max_epochs", "1", "--trainer.logger", "CSVLogger"]
    args += ["--trainer.logger.save_dir", str(tmp_path / "logs"), "--checkpoint.dirpath", str(tmp_path / "ckpt")]
    with pytest.warns(DataWarning, match="corrupt.jpg"):
        cli = run_config(args)
    assert cli.trainer.current_epoch == 1 and cli.trainer.global_step == 1  # 6 readable train images: one batch
    rows = list(csv.DictReader(next((tmp_path / "logs").rglob("metrics.csv")).open()))
    logged = {k: float(v) for row in rows for k, v in row.items() if v and "skipped" in k}
    assert logged == {"train/skipped_images": BAD_TRAIN, "val/skipped_images": 1.0}


def test_spreadsheet_csv_with_byte_order_mark_and_bad_ids_and_categories(tmp_path):
    (tmp_path / "captions.csv").write_text("\ufefffile,caption\na.jpg,a red square\n", encoding="utf-8")
    assert [r.captions for r in read_custom(tmp_path)] == [("a red square",)]
    data = karpathy_json(["rgb.jpg"])
    data["images"][0]["imgid"] = "seven"
    (tmp_path / "k.json").write_text(json.dumps(data))
    with pytest.raises(CaptioningError, match=r"k\.json: .*images\[0\] has a non-integer 'cocoid' / 'imgid'"):
        read_karpathy(tmp_path / "k.json", tmp_path)
    images = [{"id": 1, "file_name": "a.jpg"}]
    (tmp_path / "c.json").write_text(
        json.dumps({"images": images, "annotations": [{"id": 1, "image_id": 1, "caption": "x"}]})
    )
    instances = {"images": images, "annotations": [{"id": 1, "image_id": 1, "bbox": [1, 2, 3, 4], "category_id": 9}]}
    (tmp_path / "i.json").write_text(json.dumps({**instances, "categories": [{"id": 1, "name": "circle"}]}))
    with pytest.raises(CaptioningError, match=r"i\.json: annotations\[0\] needs a 4-number 'bbox' and a 'category_id'"):
        read_coco_captions(tmp_path / "c.json", tmp_path, split="train", instances_file=tmp_path / "i.json")


def test_val_and_test_references_without_a_word_are_kept_and_training_captions_dropped(tmp_path):
    """A reference that tokenizes to nothing counts in pycocoevalcap's scores (CIDEr-D's document frequencies, BLEU's
    closest length), so ``evaluate`` must keep it, as ``captioning score`` does; as a training target it is dropped."""
    captions = {
        "images": [{"id": 7, "file_name": "a.png", "height": 8, "width": 8}],
        "annotations": [
            {"id": 1, "image_id": 7, "caption": "a red square"},
            {"id": 2, "image_id": 7, "caption": "..."},
        ],
    }
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    with pytest.warns(DataWarning, match=r"kept 1 val/test reference\(s\) without a word"):
        [val] = read_coco_captions(tmp_path / "captions.json", tmp_path / "images", split="val")
    assert val.captions == ("a red square", "...")
    with pytest.warns(DataWarning, match=r"dropped 1 empty caption\(s\)"):
        [train] = read_coco_captions(tmp_path / "captions.json", tmp_path / "images", split="train")
    assert train.captions == ("a red square",)
