"""Attention grounding (captioning.metrics.grounding): pointing game and attention mass against boxes, and object
naming (the right-object rate and per-category counts)."""

import json

import pytest
import torch

from captioning.data.records import Box
from captioning.data.synonyms import COCO_WORDS, SHAPES_WORDS, synonyms_for
from captioning.metrics.evaluator import CaptionEvaluator
from captioning.metrics.grounding import GroundingTarget, ground_caption, summarize
from captioning.models.attention.weights import FINAL_MAP
from captioning.viz.tables import grounding_markdown, naming_table

# A 96 x 96 image on a 3 x 3 grid (32-px cells): a circle in the top-left cell, a square in the bottom-right one.
TARGET = GroundingTarget(96, 96, (Box(4, 4, 24, 24, "circle"), Box(64, 64, 32, 32, "square")))


def peaked(cell: int, steps: int = 4) -> torch.Tensor:
    weights = torch.full((steps, 9), 0.02)
    weights[:, cell] = 1 - 0.02 * 8
    return weights  # (T, N), rows sum to 1


def test_attention_on_the_named_object_hits_and_elsewhere_misses() -> None:
    words = ["a", "red", "circle", "<eos>"]
    on = ground_caption(words, {"alpha": peaked(0)}, TARGET, synonyms=SHAPES_WORDS)
    off = ground_caption(words, {"alpha": peaked(8)}, TARGET, synonyms=SHAPES_WORDS)
    assert (on.layers[FINAL_MAP].words, on.layers[FINAL_MAP].hits) == (1, 1)
    assert (off.layers[FINAL_MAP].words, off.layers[FINAL_MAP].hits) == (1, 0)
    assert on.layers[FINAL_MAP].mass > 4 * on.layers[FINAL_MAP].area > off.layers[FINAL_MAP].mass
    assert on.layers[FINAL_MAP].area == pytest.approx(24 * 24 / 96**2)


def test_uniform_attention_puts_the_box_area_share_inside_the_box() -> None:
    uniform = torch.full((3, 9), 1 / 9)
    result = ground_caption(["big", "blue", "box"], {"alpha": uniform}, TARGET, synonyms=SHAPES_WORDS)
    tally = result.layers[FINAL_MAP]
    assert tally.area == pytest.approx(32 * 32 / 96**2)
    assert tally.mass == pytest.approx(tally.area)


def test_each_layer_is_scored_on_its_own_step_and_channel_weights_are_ignored() -> None:
    layer_a = peaked(0)
    layer_b = peaked(0)
    layer_b[1] = peaked(8)[1]  # step 1 ("square") looks at the square in layer b only
    attention = {"alpha.layer4.1.conv1": layer_a, "alpha.layer4": layer_b, "beta.layer4": torch.rand(4, 16)}
    result = ground_caption(["circle", "square", "<eos>"], attention, TARGET, synonyms=SHAPES_WORDS)
    assert set(result.layers) == {"layer4.1.conv1", "layer4"}  # by attended layer: the channel weights are not read
    assert result.layers["layer4.1.conv1"].hits == 1  # circle hit, square missed
    assert result.layers["layer4"].hits == 2
    scores = summarize({1: result})
    assert scores["pointing.layer4"] == 1.0
    assert scores["pointing.layer4.1.conv1"] == 0.5
    assert scores["pointing"] == scores["pointing.layer4"]  # the top layer: the last in the attention's order
    assert scores["object_words"] == 2


def test_absent_objects_are_counted_apart_and_other_words_are_ignored() -> None:
    result = ground_caption(["a", "star", "and", "a", "disc"], {"alpha": peaked(0, 5)}, TARGET, synonyms=SHAPES_WORDS)
    assert result.absent == 1  # no star in the image
    assert result.layers[FINAL_MAP].words == 1  # "disc" names the circle
    assert summarize({1: result})["absent_object_words"] == 1


def test_non_square_images_and_grids() -> None:
    target = GroundingTarget(128, 64, (Box(96, 0, 32, 32, "dog"),))  # 2 x 4 grid of 32-px cells
    weights = torch.zeros(1, 8)
    weights[0, 3] = 1.0  # top-right cell
    result = ground_caption(["dogs"], {"alpha": weights}, target, synonyms=synonyms_for({"dog"}))
    assert result.layers[FINAL_MAP].hits == 1
    with pytest.raises(ValueError, match="grid"):
        ground_caption(["dog"], {"alpha": torch.ones(1, 7) / 7}, target, synonyms=COCO_WORDS)


def test_synonym_tables() -> None:
    assert synonyms_for({"circle", "square"}) is SHAPES_WORDS
    assert SHAPES_WORDS["ball"] == "circle"
    coco = synonyms_for({"person", "dog", "traffic light"})
    assert coco["women"] == "person" and coco["puppy"] == "dog" and coco["stoplight"] == "traffic light"
    assert len(set(COCO_WORDS.values())) == 80  # every COCO instance category has at least one word


def test_grounding_markdown_has_a_row_per_layer_and_a_line_without_spatial_attention():
    summary = {
        "pointing.layer4.1.conv1": 0.5,
        "mass.layer4.1.conv1": 0.25,
        "area.layer4.1.conv1": 0.125,
        "object_words": 4.0,
        "pointing.layer4": None,
        "mass.layer4": None,
        "area.layer4": None,
        "pointing": None,
        "mass": None,
        "area": None,
        "absent_object_words": 3.0,
    }
    lines = grounding_markdown(summary).splitlines()
    assert (
        lines[0] == "Attention grounding (4 generated words naming an object in their image, 3 naming one that is not):"
    )
    assert lines[-2:] == ["| layer4.1.conv1 | 0.500 | 0.250 | 0.125 |", "| layer4 | - | - | - |"]
    no_maps = grounding_markdown({"absent_object_words": 2.0})
    assert no_maps == "Attention grounding: the model has no spatial attention to score.\n"


def _one(category: str, *more: str) -> GroundingTarget:
    """A 96 x 96 image with a box of each category, side by side in 32-px cells."""
    return GroundingTarget(96, 96, tuple(Box(32 * i, 0, 32, 32, c) for i, c in enumerate((category, *more))))


# Hand-made captions with known answers; the comment says what each image adds to the naming counts.
NAMING_CASES = {
    1: ("a red ball", _one("circle")),  # one-object, right (through a synonym)
    2: ("a red circle left of a blue box", _one("circle")),  # one-object, the right shape plus a wrong extra one
    3: ("a green rhombus", _one("square")),  # one-object, wrong: the rhombus is a diamond
    4: ("a purple rhombus", _one("diamond")),  # one-object, right (synonym)
    5: ("a small circle", TARGET),  # two objects (circle, square): not in the rate, the square is not named
    6: ("a red square above a blue box", _one("square", "square")),  # two squares: two objects, not in the rate
    7: ("a white star", _one("triangle")),  # one-object, wrong: the triangle is never named, the star never there
}
# (named, present, correct) per category, counted by hand from NAMING_CASES
NAMING_COUNTS = {
    "circle": (3, 3, 3),
    "square": (2, 3, 1),
    "diamond": (2, 1, 1),
    "triangle": (0, 1, 0),
    "star": (1, 0, 0),
}


def _naming_summary() -> dict[str, float | None]:
    images = {i: ground_caption(c.split(), {}, t, synonyms=SHAPES_WORDS) for i, (c, t) in NAMING_CASES.items()}
    return summarize(images)


def test_a_caption_records_the_categories_it_names_and_those_in_its_image() -> None:
    words = ["a", "red", "circle", "left", "of", "a", "blue", "box", "<eos>"]
    with_maps = ground_caption(words, {"alpha": torch.full((9, 9), 1 / 9)}, TARGET, synonyms=SHAPES_WORDS)
    without = ground_caption(words, {}, TARGET, synonyms=SHAPES_WORDS)
    assert with_maps.named == without.named == {"circle", "square"}
    assert with_maps.present == without.present == {"circle", "square"}
    assert without.layers == {} and with_maps.layers[FINAL_MAP].words == 2
    nothing = ground_caption(["a", "red", "thing"], {}, TARGET, synonyms=SHAPES_WORDS)
    assert nothing.named == frozenset() and nothing.present == {"circle", "square"}


def test_right_object_rate_counts_one_category_images_named_right_and_nothing_else() -> None:
    summary = _naming_summary()
    assert summary["one_object_images"] == 5  # all but images 5 and 6 (two boxes each)
    assert summary["right_object"] == pytest.approx(2 / 5)  # images 1 and 4
    for category, (named, present, correct) in NAMING_COUNTS.items():
        counts = (summary[f"named.{category}"], summary[f"present.{category}"], summary[f"correct.{category}"])
        assert counts == (named, present, correct), category
    assert {k.removeprefix("named.") for k in summary if k.startswith("named.")} == set(NAMING_COUNTS)
    assert all(v is None or isinstance(v, float) for v in summary.values())  # loggable as metrics
    assert "pointing" not in summary and summary["absent_object_words"] == 3  # no maps; images 2, 3 and 7


def test_right_object_rate_is_none_without_one_object_images() -> None:
    summary = summarize({1: ground_caption(["a", "circle"], {}, TARGET, synonyms=SHAPES_WORDS)})
    assert summary["right_object"] is None and summary["one_object_images"] == 0
    assert (summary["named.circle"], summary["present.square"], summary["correct.square"]) == (1, 1, 0)
    assert json.loads(json.dumps(summary)) == summary  # None travels as null
    assert "no one-object images, so no right-object rate" in grounding_markdown(summary)


def test_coco_categories_with_spaces_are_counted_and_survive_json() -> None:
    target = GroundingTarget(64, 64, (Box(0, 0, 32, 32, "traffic light"), Box(32, 32, 32, 32, "car")))
    synonyms = synonyms_for({"traffic light", "car"})
    summary = summarize({9: ground_caption(["a", "stoplight", "over", "cars"], {}, target, synonyms=synonyms)})
    assert summary["correct.traffic light"] == summary["correct.car"] == 1
    assert json.loads(json.dumps(summary)) == summary


def test_evaluator_counts_naming_without_attention_and_only_for_images_with_targets() -> None:
    evaluator = CaptionEvaluator()
    evaluator.ground_on({i: t for i, (_, t) in NAMING_CASES.items()}, SHAPES_WORDS)
    captions = {i: c for i, (c, _) in NAMING_CASES.items()}
    evaluator.add([1, 2, 3], [captions[i] for i in (1, 2, 3)], [["r"]] * 3, None)  # e.g. a blind model
    evaluator.add([4, 5, 6, 7, 8], [*(captions[i] for i in (4, 5, 6, 7)), "a ball"], [["r"]] * 5, {})  # attention none
    assert set(evaluator.grounding) == set(NAMING_CASES)  # image 8 has no boxes
    assert evaluator.grounding_scores() == _naming_summary()
    evaluator.reset()
    attention = {"alpha": torch.full((1, 6, 9), 1 / 9)}  # (B, T, N) with spatial attention: naming and grounding
    evaluator.add([5], [captions[5]], [["r"]], attention)
    scores = evaluator.grounding_scores()
    assert scores["object_words"] == 1 and scores["named.circle"] == 1 and scores["present.square"] == 1


def test_naming_markdown_has_the_rate_and_a_row_per_category_also_without_attention() -> None:
    summary = json.loads(json.dumps(_naming_summary()))  # as the demo and evaluate read grounding.json
    lines = grounding_markdown(summary).splitlines()
    assert lines[:3] == [
        "Attention grounding: the model has no spatial attention to score.",
        "",
        "Object naming: names the right object (and no other) on 40.0% of 5 one-object images.",
    ]
    assert lines[4:] == [
        "| category | named | present | named / present | precision | recall |",
        "|---|---|---|---|---|---|",
        "| circle | 3 | 3 | 1.000 | 1.000 | 1.000 |",
        "| square | 2 | 3 | 0.667 | 0.500 | 0.333 |",
        "| diamond | 2 | 1 | 2.000 | 0.500 | 1.000 |",
        "| triangle | 0 | 1 | 0.000 | - | 0.000 |",
        "| star | 1 | 0 | - | 0.000 | - |",
    ]
    assert naming_table({"pointing.soft": 0.5}) == ("", [])  # a grounding.json written before naming was measured


def test_grounding_and_naming_markdown_together() -> None:
    attention = {"alpha": peaked(0, 3)}
    summary = summarize({1: ground_caption(["a", "circle", "<eos>"], attention, TARGET, synonyms=SHAPES_WORDS)})
    text = grounding_markdown(summary)
    assert "| attended layer | pointing game |" in text and "| soft | 1.000 |" in text
    assert "Object naming: no one-object images" in text and "| circle | 1 | 1 | 1.000 | 1.000 | 1.000 |" in text
