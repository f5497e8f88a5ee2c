"""Attention grounding (captioning.metrics.grounding): pointing game and attention mass against boxes."""

import pytest
import torch

from captioning.data.records import Box
from captioning.metrics.grounding import (
    COCO_WORDS,
    SHAPES_WORDS,
    GroundingTarget,
    ground_caption,
    grounding_markdown,
    summarize,
    synonyms_for,
)

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
    assert (on.layers["alpha"].words, on.layers["alpha"].hits) == (1, 1)
    assert (off.layers["alpha"].words, off.layers["alpha"].hits) == (1, 0)
    assert on.layers["alpha"].mass > 4 * on.layers["alpha"].area > off.layers["alpha"].mass
    assert on.layers["alpha"].area == pytest.approx(24 * 24 / 96**2)


def test_uniform_attention_puts_the_box_area_share_inside_the_box() -> None:
    uniform = torch.full((3, 9), 1 / 9)
    result = ground_caption(["big", "blue", "box"], {"alpha": uniform}, TARGET, synonyms=SHAPES_WORDS)
    tally = result.layers["alpha"]
    assert tally.area == pytest.approx(32 * 32 / 96**2)
    assert tally.mass == pytest.approx(tally.area)


def test_each_layer_is_scored_on_its_own_step_and_channel_weights_are_ignored() -> None:
    layer_a = peaked(0)
    layer_b = peaked(0)
    layer_b[1] = peaked(8)[1]  # step 1 ("square") looks at the square in layer b only
    attention = {"alpha.layer4.1.conv1": layer_a, "alpha.layer4": layer_b, "beta.layer4": torch.rand(4, 16)}
    result = ground_caption(["circle", "square", "<eos>"], attention, TARGET, synonyms=SHAPES_WORDS)
    assert set(result.layers) == {"alpha.layer4.1.conv1", "alpha.layer4"}
    assert result.layers["alpha.layer4.1.conv1"].hits == 1  # circle hit, square missed
    assert result.layers["alpha.layer4"].hits == 2
    scores = summarize({1: result})
    assert scores["pointing.layer4"] == 1.0
    assert scores["pointing.layer4.1.conv1"] == 0.5
    assert scores["pointing"] == scores["pointing.layer4"]  # the top layer: the last in the attention's order
    assert scores["object_words"] == 2


def test_absent_objects_are_counted_apart_and_other_words_are_ignored() -> None:
    result = ground_caption(["a", "star", "and", "a", "disc"], {"alpha": peaked(0, 5)}, TARGET, synonyms=SHAPES_WORDS)
    assert result.absent == 1  # no star in the image
    assert result.layers["alpha"].words == 1  # "disc" names the circle
    assert summarize({1: result})["absent_object_words"] == 1


def test_non_square_images_and_grids() -> None:
    target = GroundingTarget(128, 64, (Box(96, 0, 32, 32, "dog"),))  # 2 x 4 grid of 32-px cells
    weights = torch.zeros(1, 8)
    weights[0, 3] = 1.0  # top-right cell
    result = ground_caption(["dogs"], {"alpha": weights}, target, synonyms=synonyms_for({"dog"}))
    assert result.layers["alpha"].hits == 1
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
