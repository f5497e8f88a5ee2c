"""Readers (official COCO files with pycocotools, Karpathy JSON), the Dataset and the DataModule."""

import json

import pytest
from PIL import Image

from captioning.data.coco import read_coco_captions, read_karpathy
from captioning.data.datamodule import CaptionDataModule
from captioning.data.dataset import CaptionDataset, collate
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

CAPTIONS = {
    1: ["A red circle.", "a red ball", "one red disc"],
    2: ["Two blue squares", "blue boxes"],
    3: ["a green star"],
}


def write_coco(root, split, captions, *, boxes=False):
    images = [{"id": i, "file_name": f"{split}/{i:03d}.png", "width": 32, "height": 32} for i in captions]
    anns = [
        {"id": 100 * i + k, "image_id": i, "caption": c} for i, caps in captions.items() for k, c in enumerate(caps)
    ]
    (root / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": anns}))
    for i in captions:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(root / "images" / split / f"{i:03d}.png")
    if boxes:
        inst = [
            {
                "id": i,
                "image_id": i,
                "category_id": 1,
                "bbox": [1, 2, 10, 12],
                "area": 120,
                "iscrowd": 0,
                "segmentation": [[1, 2, 11, 2, 11, 14, 1, 14]],
            }
            for i in captions
        ]
        cats = [{"id": 1, "name": "circle", "supercategory": "shape"}]
        (root / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": inst, "categories": cats})
        )


def test_read_coco_captions_with_boxes(tmp_path):
    write_coco(tmp_path, "train", CAPTIONS, boxes=True)
    records = read_coco_captions(
        tmp_path / "captions_train.json",
        tmp_path / "images",
        split="train",
        instances_file=tmp_path / "instances_train.json",
    )
    assert [r.image_id for r in records] == [1, 2, 3]
    assert records[0].captions == tuple(CAPTIONS[1]) and records[0].path == tmp_path / "images/train/001.png"
    assert records[1].boxes[0].category == "circle" and records[1].boxes[0].width == 10


def test_malformed_annotation_files_name_the_file(tmp_path):
    (tmp_path / "captions_train.json").write_text('{"images": [}')
    with pytest.raises(CaptioningError, match=r"captions_train\.json"):
        read_coco_captions(tmp_path / "captions_train.json", tmp_path, split="train")
    with pytest.raises(CaptioningError, match="not found"):
        read_coco_captions(tmp_path / "missing.json", tmp_path, split="train")
    (tmp_path / "k.json").write_text(json.dumps({"images": [{"split": "train"}]}))
    with pytest.raises(CaptioningError, match=r"k\.json.*Karpathy"):
        read_karpathy(tmp_path / "k.json", tmp_path)


def test_read_karpathy_merges_restval(tmp_path):
    images = [
        {"filepath": "train2014", "filename": "a.jpg", "cocoid": 7, "split": "train", "sentences": [{"raw": "x y"}]},
        {"filepath": "val2014", "filename": "b.jpg", "cocoid": 8, "split": "restval", "sentences": [{"raw": "z"}]},
        {"filepath": "val2014", "filename": "c.jpg", "cocoid": 9, "split": "test", "sentences": [{"raw": "w"}]},
    ]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images}))
    records = read_karpathy(tmp_path / "dataset_coco.json", tmp_path)
    assert [(r.image_id, r.split) for r in records] == [(7, "train"), (8, "train"), (9, "test")]
    assert records[1].path == tmp_path / "val2014" / "b.jpg"
    kept = read_karpathy(tmp_path / "dataset_coco.json", tmp_path, merge_restval=False)
    assert kept[1].split == "restval"


def test_dataset_sampling_modes(tmp_path):
    write_coco(tmp_path, "train", CAPTIONS)
    records = read_coco_captions(tmp_path / "captions_train.json", tmp_path / "images", split="train")
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    pairs = CaptionDataset(records, vocab, image_size=16, max_len=8, sampling="all_pairs")
    assert len(pairs) == 6
    assert vocab.decode(pairs[1]["tokens"][0]) == "a red ball"
    per_image = CaptionDataset(records, vocab, image_size=16, max_len=8, sampling="random_reference")
    assert len(per_image) == 3
    drawn = {vocab.decode(per_image[epoch * 3]["tokens"][0]) for epoch in range(30)}  # draw ids of image 0
    assert drawn == {"a red circle", "a red ball", "one red disc"}
    assert [per_image[7]["tokens"][0].tolist() for _ in range(3)] == [per_image[7]["tokens"][0].tolist()] * 3
    big_seed = CaptionDataset(records, vocab, image_size=16, max_len=8, sampling="random_reference", seed=2**32 - 1)
    assert len(big_seed[10**12]["tokens"]) == 1  # any seed (--seed_everything true draws up to 2**32 - 1), any epoch
    item = per_image[0]
    assert item["image"].shape == (3, 16, 16) and item["references"] == CAPTIONS[1]
    several = CaptionDataset(
        records, vocab, image_size=16, max_len=8, sampling="random_reference", references_per_image=3
    )
    assert sorted(vocab.decode(t) for t in several[0]["tokens"]) == ["a red ball", "a red circle", "one red disc"]
    assert len(several[2]["tokens"]) == 3  # one caption only: drawn with replacement to keep batches rectangular
    batch = collate([several[0], several[1]])
    assert batch.tokens.shape[0] == 6 and batch.images.shape[0] == 2
    # token ids are encoded once and reused; writing into a batch never reaches the cached ids
    first = pairs[1]["tokens"][0]
    assert pairs[1]["tokens"][0] is first and first.tolist() == vocab.encode("a red ball", max_len=8)
    collate([pairs[1]]).tokens.fill_(0)
    assert vocab.decode(pairs[1]["tokens"][0]) == "a red ball"


def test_datamodule_builds_vocabulary_from_train_only(tmp_path):
    write_coco(tmp_path, "train", {1: ["a red circle"], 2: ["a blue circle"]})
    write_coco(tmp_path, "val", {3: ["a purple star"]})
    write_coco(tmp_path, "test", {4: ["a yellow moon"]})
    data = CaptionDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    assert "purple" not in data.vocab.words and "red" in data.vocab.words
    batch = next(iter(data.val_dataloader()))
    assert batch.images.shape == (1, 3, 16, 16) and batch.references == [["a purple star"]]
    assert data.vocab.decode(batch.tokens[0]) == "a <unk> <unk>"
    train = next(iter(data.train_dataloader()))
    assert train.tokens.shape == (2, 5) and train.lengths.tolist() == [5, 5]


def test_datamodule_missing_root_is_one_clear_error(tmp_path):
    with pytest.raises(CaptioningError, match="dataset folder not found"):
        CaptionDataModule(str(tmp_path / "nowhere"))
