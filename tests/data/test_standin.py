"""The COCO-size stand-in (``captioning prepare shapes-coco``): COCO's split sizes times the scale, the COCO 2014
and Karpathy layouts that the readers and ``prepare`` accept, 5-7 captions an image, and the same bytes whatever
the number of worker processes."""

import hashlib
import json

from captioning.cli.prepare import main as prepare
from captioning.data.datamodule import CaptionDataModule
from captioning.data.standin import generate_coco_standin


def _digest(root) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_the_stand_in_has_coco_sizes_and_layouts_and_is_deterministic(tmp_path, capsys):
    prepare(["shapes-coco", "--out", str(tmp_path / "a"), "--scale", "0.001", "--workers", "2"])
    assert "83 train, 31 restval, 5 val, 5 test" in capsys.readouterr().out  # 82,783 / 30,504 / 5,000 / 5,000
    counts = generate_coco_standin(tmp_path / "b", scale=0.001, workers=1, show_progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")  # one seed, one set of bytes
    root = tmp_path / "a"
    assert len(list((root / "train2014").glob("COCO_train2014_*.jpg"))) == counts["train"] == 83
    assert len(list((root / "val2014").glob("COCO_val2014_*.jpg"))) == 31 + 5 + 5
    karpathy = CaptionDataModule(str(root), annotations="karpathy", annotation_file="dataset_coco.json", image_dir=".")
    assert [len(karpathy.records(s)) for s in ("train", "val", "test")] == [114, 5, 5]  # restval merged into train
    official = CaptionDataModule(
        str(root),
        annotations="coco",
        image_dir=".",
        coco_splits={s: ("annotations/captions_val2014.json", "val2014") for s in ("val", "test")}
        | {"train": ("annotations/captions_train2014.json", "train2014")},
    )
    assert len(official.records("train")) == 83 and len(official.records("val")) == 41
    assert all(r.boxes for r in official.records("val"))  # instances_val2014.json read alongside
    per_image = [len(r.captions) for r in karpathy.records("train")]
    assert min(per_image) == 5 and max(per_image) <= 7 and sum(per_image) > 5 * len(per_image)
    data = json.loads((root / "dataset_coco.json").read_text())
    assert {i["split"] for i in data["images"]} == {"train", "restval", "val", "test"}
