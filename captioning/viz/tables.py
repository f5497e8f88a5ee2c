"""Grounding and object-naming scores (:mod:`captioning.metrics.grounding`) as tables: rows for the HTML report,
markdown for ``summary.md`` and the terminal. Their input is the dictionary of
:func:`captioning.metrics.grounding.summarize` (``grounding.json``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

GROUNDING_COLUMNS = ("attended layer", "pointing game", "attention mass in boxes", "chance (box area share)")


def grounding_table(grounding: Mapping[str, float | None]) -> tuple[str, list[list[str]]]:
    """A :func:`summarize` result as (one line of word counts, rows of ``GROUNDING_COLUMNS``): per attended layer,
    pointing-game accuracy and attention mass in the named objects' boxes, against chance. No rows and a line that
    says so when the model has no spatial attention."""
    layers = [key.removeprefix("pointing.") for key in grounding if key.startswith("pointing.")]
    if not layers:
        return "Attention grounding: the model has no spatial attention to score.", []
    intro = (
        f"Attention grounding ({grounding['object_words']:.0f} generated words naming an object in their image, "
        f"{grounding['absent_object_words']:.0f} naming one that is not):"
    )
    rows = []
    for layer in layers:
        cells = [grounding[f"{k}.{layer}"] for k in ("pointing", "mass", "area")]
        rows.append([layer, *("-" if c is None else f"{c:.3f}" for c in cells)])
    return intro, rows


NAMING_COLUMNS = ("category", "named", "present", "named / present", "precision", "recall")


def naming_table(grounding: Mapping[str, float | None]) -> tuple[str, list[list[str]]]:
    """The object naming of a :func:`summarize` result as (one line with the right-object rate, rows of
    ``NAMING_COLUMNS``): per category, the captions naming it, the images showing it, their ratio, and precision
    (correct / named) and recall (correct / present); the most present first. ``("", [])`` for a result without
    naming counts (one written before they were measured)."""
    if "one_object_images" not in grounding:
        return "", []
    rate = grounding.get("right_object")
    line = (
        f"Object naming: names the right object (and no other) on {rate:.1%} of "
        f"{grounding['one_object_images']:.0f} one-object images."
        if rate is not None
        else "Object naming: no one-object images, so no right-object rate."
    )

    def count(key: str) -> float:
        return grounding.get(key) or 0.0

    def ratio(numerator: float, denominator: float) -> str:
        return f"{numerator / denominator:.3f}" if denominator else "-"

    categories = [key.removeprefix("present.") for key in grounding if key.startswith("present.")]
    rows = []
    for c in sorted(categories, key=lambda c: (-count(f"present.{c}"), c)):
        named, present, correct = (count(f"{key}.{c}") for key in ("named", "present", "correct"))
        counts = [f"{named:.0f}", f"{present:.0f}"]
        rows.append([c, *counts, ratio(named, present), ratio(correct, named), ratio(correct, present)])
    return line, rows


def grounding_markdown(grounding: Mapping[str, float | None]) -> str:
    """:func:`grounding_table` and :func:`naming_table` as lines and markdown tables."""
    intro, rows = grounding_table(grounding)
    lines = [intro, *_markdown_table(GROUNDING_COLUMNS, rows)]
    line, naming = naming_table(grounding)
    if line:
        lines += ["", line, *_markdown_table(NAMING_COLUMNS, naming)]
    return "\n".join(lines) + "\n"


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A blank line and the table's lines; nothing without rows."""
    if not rows:
        return []
    return [
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
