"""The synthetic shapes set: byte-for-byte determinism, valid COCO and Karpathy files, correct captions, PNGs."""

import contextlib
import io
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from captioning.data.shapes import COLOURS, RELATIONS, SHAPES, SIZES, generate_shapes

SPLITS = {"train": 12, "val": 4, "test": 4}
SIZE = 64
SHAPE_WORDS = {word: shape for shape, words in SHAPES.items() for word in words}
SIZE_WORDS = {word: size for size, words in SIZES.items() for word in words}
RELATION_WORDS = {phrase: key for key, phrases in RELATIONS.items() for phrase in phrases}


def generate(out: Path, seed: int = 0) -> dict[str, int]:
    return generate_shapes(out, **SPLITS, seed=seed, image_size=SIZE, show_progress=False)


def load_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timing lines
        return COCO(str(path))


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    assert generate(out) == SPLITS
    return out


@pytest.fixture(scope="module")
def objects(root) -> dict[int, list[dict]]:
    """Instance annotations by image id, over all splits."""
    by_image: dict[int, list[dict]] = {}
    for split in SPLITS:
        for ann in json.loads((root / f"instances_{split}.json").read_text())["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
    return by_image


def test_same_seed_same_bytes_other_seed_other_data(root, tmp_path):
    expected = files(root)
    assert len(expected) == 7 + sum(SPLITS.values())  # 3 captions + 3 instances + Karpathy files, and the PNGs
    generate(tmp_path / "again")
    assert files(tmp_path / "again") == expected
    generate(tmp_path / "other", seed=1)
    other = files(tmp_path / "other")
    assert other.keys() == expected.keys()
    assert other["captions_train.json"] != expected["captions_train.json"]
    assert all(other[name] != expected[name] for name in expected if name.endswith(".png"))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="counts"):
        generate_shapes("unused", train=-1, show_progress=False)
    with pytest.raises(ValueError, match="image_size"):
        generate_shapes("unused", image_size=16, show_progress=False)


def test_coco_files_load_and_are_consistent(root, objects):
    ids: list[int] = []
    for split, count in SPLITS.items():
        captions, instances = load_coco(root / f"captions_{split}.json"), load_coco(root / f"instances_{split}.json")
        image_ids = sorted(captions.getImgIds())
        assert len(image_ids) == count and sorted(instances.getImgIds()) == image_ids
        assert all(len(captions.getAnnIds(imgIds=i)) == 5 for i in image_ids)
        assert {c["name"] for c in instances.loadCats(instances.getCatIds())} == set(SHAPES)
        assert {c["supercategory"] for c in instances.loadCats(instances.getCatIds())} == {"shape"}
        for image in captions.loadImgs(image_ids):
            assert image["file_name"] == f"{split}/{image['id']:06d}.png"
            assert (image["width"], image["height"]) == (SIZE, SIZE)
        ids += image_ids
    assert ids == list(range(1, sum(SPLITS.values()) + 1))  # unique across splits, train first


def test_boxes_inside_the_image_and_apart(objects):
    widths = {size: [a["bbox"][2] for anns in objects.values() for a in anns if a["size"] == size] for size in SIZES}
    assert max(widths["small"]) < 0.7 * min(widths["large"])  # the size words name clearly different sizes
    for anns in objects.values():
        assert 1 <= len(anns) <= 3
        boxes = [ann["bbox"] for ann in anns]
        for x, y, w, h in boxes:
            assert 0 <= x <= SIZE - w and 0 <= y <= SIZE - h and w > 0 and h > 0
        for (ax, ay, aw, ah), (bx, by, bw, bh) in itertools.combinations(boxes, 2):
            assert ax + aw < bx or bx + bw < ax or ay + ah < by or by + bh < ay
        for ann in anns:
            assert ann["iscrowd"] == 0 and 0 < ann["area"] <= ann["bbox"][2] * ann["bbox"][3]
            assert ann["color"] in COLOURS and ann["size"] in SIZES and len(ann["segmentation"][0]) >= 6


def test_karpathy_file_matches_the_coco_files(root):
    karpathy = json.loads((root / "dataset_shapes.json").read_text())
    assert karpathy["dataset"] == "shapes"
    by_id = {image["cocoid"]: image for image in karpathy["images"]}
    sentids = [s for image in karpathy["images"] for s in image["sentids"]]
    assert len(sentids) == len(set(sentids))
    for split in SPLITS:
        coco = load_coco(root / f"captions_{split}.json")
        for image_id in coco.getImgIds():
            image = by_id.pop(image_id)
            assert image["split"] == image["filepath"] == split
            assert f"{split}/{image['filename']}" == coco.loadImgs(image_id)[0]["file_name"]
            raws = [ann["caption"] for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id))]
            assert [s["raw"] for s in image["sentences"]] == raws
            assert [s["sentid"] for s in image["sentences"]] == image["sentids"]
            for sentence in image["sentences"]:
                assert sentence["imgid"] == image["imgid"]
                assert sentence["tokens"] == re.findall(r"[a-z]+", sentence["raw"].lower())
    assert not by_id  # no image only in the Karpathy file


def mentions(tokens: list[str]) -> list[tuple[int, int, str | None, str, str]]:
    """(start, end, size or None, colour, shape) for every "[size] colour shape" phrase of a caption."""
    found = []
    for i, word in enumerate(tokens[:-1]):
        if word in COLOURS and tokens[i + 1] in SHAPE_WORDS:
            size = SIZE_WORDS.get(tokens[i - 1]) if i > 0 else None
            found.append((i - (size is not None), i + 2, size, word, SHAPE_WORDS[tokens[i + 1]]))
    return found


def relation(a: dict, b: dict) -> str:
    (ax, ay, aw, ah), (bx, by, bw, bh) = a["bbox"], b["bbox"]
    dx, dy = (ax + aw / 2) - (bx + bw / 2), (ay + ah / 2) - (by + bh / 2)
    return ("left" if dx < 0 else "right") if abs(dx) > abs(dy) else ("above" if dy < 0 else "below")


def test_captions_describe_the_image(root, objects):
    karpathy = json.loads((root / "dataset_shapes.json").read_text())
    relations_checked = 0
    for image in karpathy["images"]:
        anns = {(ann["color"], ann["category_id"]): ann for ann in objects[image["cocoid"]]}
        names = {i + 1: name for i, name in enumerate(SHAPES)}
        present = {(colour, names[category]): ann for (colour, category), ann in anns.items()}
        assert len({s["raw"] for s in image["sentences"]}) >= 4  # the five references mostly differ
        for sentence in image["sentences"]:
            tokens = sentence["tokens"]
            assert 1 <= len(tokens) <= 16
            found = mentions(tokens)
            assert found, sentence["raw"]  # names the colour and shape of at least one object
            assert {w for w in tokens if w in COLOURS} <= {colour for colour, _ in present}, sentence["raw"]
            assert {SHAPE_WORDS[w] for w in tokens if w in SHAPE_WORDS} <= {s for _, s in present}, sentence["raw"]
            for _, _, size, colour, shape in found:
                assert (colour, shape) in present, sentence["raw"]
                assert size in (None, present[colour, shape]["size"]), sentence["raw"]
            for (_, end, _, *a), (start, _, _, *b) in itertools.pairwise(found):
                between = [w for w in tokens[end:start] if w not in ("a", "one")]
                key = RELATION_WORDS.get(" ".join(between))
                if key is not None:
                    assert key == relation(present[tuple(a)], present[tuple(b)]), sentence["raw"]
                    relations_checked += 1
    assert relations_checked > 10


def test_pngs_are_rgb_and_show_the_objects_in_their_colours(root, objects):
    pngs = sorted((root / "images").rglob("*.png"))
    assert len(pngs) == sum(SPLITS.values())
    for png in pngs:
        with Image.open(png) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (SIZE, SIZE)
            pixels = np.asarray(image, dtype=float)
        for ann in objects[int(png.stem)]:
            x, y, w, h = ann["bbox"]
            cx, cy = round(x + w / 2), round(y + h / 2)  # inside every shape
            patch = pixels[cy - 1 : cy + 2, cx - 1 : cx + 2].mean(axis=(0, 1))  # (3,)
            assert np.abs(patch - COLOURS[ann["color"]]).max() < 30, (png, ann)
