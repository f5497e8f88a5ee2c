"""A self-contained HTML report of one evaluated split (``captioning evaluate ... --report``), and its screenshot.

One file, no server and no network: the images and attention strips are JPEGs inlined as ``data:`` URIs, the table
sorts by any column with a few lines of inline JavaScript, and the styles are inline too. Per image it shows the
picture, the generated caption, the references, the per-image scores (CIDEr-D first) and an attention strip: every
word over its spatial map, one row per attended layer. The split's metrics (and attention grounding and object
naming, where the data has boxes) head the page.

A split larger than a limit (5,000 COCO test images would make a page of about 100 MB) is shown through images
spread evenly over the CIDEr-D ranking (:func:`spread`), worst and best included; the page says so, and the metrics
always cover the whole split.
"""

from __future__ import annotations

import base64
import html
import io
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from captioning.errors import CaptioningError
from captioning.viz.attention import overlay, upsample_maps
from captioning.viz.figures import Captioned
from captioning.viz.tables import GROUNDING_COLUMNS, NAMING_COLUMNS, grounding_table, naming_table

METRIC_NAMES = {
    "Bleu_1": "BLEU-1",
    "Bleu_2": "BLEU-2",
    "Bleu_3": "BLEU-3",
    "Bleu_4": "BLEU-4",
    "METEOR": "METEOR",
    "ROUGE_L": "ROUGE-L",
    "CIDEr": "CIDEr-D",
    "SPICE": "SPICE",
}
PER_IMAGE = ("CIDEr", "Bleu_4", "METEOR", "ROUGE_L", "SPICE")  # per-image columns, where scored
THUMB = 64  # pixels per side of a strip panel (and at most of the image column's picture, doubled)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@dataclass
class ReportRow:
    """One image of the report."""

    image_id: int
    name: str  # the image's file name
    references: list[str]
    scores: dict[str, float]  # per-image metric -> score
    item: Captioned  # the caption (as evaluated), its words, attention and pixels
    note: str = ""  # shown under the caption


def spread(cider: Mapping[int, float], limit: int) -> list[int]:
    """At most ``limit`` image ids, evenly spaced over the ranking by per-image CIDEr-D (worst and best kept), in
    image-id order."""
    if limit < 1:
        raise ValueError(f"a report shows at least 1 image, not {limit}")
    if len(cider) <= limit:
        return sorted(cider)
    ranked = sorted(cider, key=lambda i: (cider[i], i))
    picks = {round(i) for i in np.linspace(0, len(ranked) - 1, limit)}  # limit 1: the worst image
    return sorted(ranked[i] for i in picks)


def jpeg_uri(pixels: np.ndarray, quality: int = 88) -> str:
    """(H, W, 3) uint8 -> a ``data:image/jpeg;base64,...`` URI."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def attention_strip(item: Captioned, size: int = THUMB) -> np.ndarray | None:
    """(layers * size, words * size, 3) uint8: each word's map over the image, one row per attended layer; None
    without spatial attention. The blend is the figures' (:func:`overlay`), the scale one per layer and image."""
    if not item.spatial:
        return None
    picture = np.asarray(Image.fromarray(item.pixels).resize((size, size), Image.Resampling.BILINEAR))
    rows = []
    for alphas in item.spatial.values():  # (T, N)
        maps = upsample_maps(alphas, (size, size))  # (T, size, size)
        rows.append(np.concatenate([overlay(picture, heat) for heat in maps], axis=1))  # (size, T * size, 3)
    return np.concatenate(rows, axis=0)


def _metrics_table(scores: Mapping[str, float]) -> str:
    names = [k for k in METRIC_NAMES if scores.get(k) is not None]
    head = "".join(f"<th>{METRIC_NAMES[k]}</th>" for k in names)
    cells = "".join(f"<td>{scores[k]:.3f}</td>" for k in names)
    return f'<table class="metrics"><tr>{head}</tr><tr>{cells}</tr></table>'


def _grounding_table(grounding: Mapping[str, float | None]) -> str:
    """The attention grounding section and, where measured, the object naming one (shown without attention too)."""
    if not grounding:
        return ""
    intro, rows = grounding_table(grounding)
    section = f"<h2>Attention grounding</h2><p>{html.escape(intro)}</p>{_html_table(GROUNDING_COLUMNS, rows)}"
    line, naming = naming_table(grounding)
    if line:
        section += f"<h2>Object naming</h2><p>{html.escape(line)}</p>{_html_table(NAMING_COLUMNS, naming)}"
    return section


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of escaped text cells; empty without rows."""
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="metrics"><tr>{head}</tr>{body}</table>'


def _score_cell(value: float | None) -> str:
    """A sortable number cell; a missing or NaN score is empty and sorts last."""
    if value is None or value != value:
        return '<td class="num" data-value="">-</td>'
    return f'<td class="num" data-value="{value:.6f}">{value:.3f}</td>'


def _row_html(row: ReportRow, columns: Sequence[str]) -> str:
    item = row.item
    side = min(2 * THUMB, item.pixels.shape[0])
    picture = np.asarray(Image.fromarray(item.pixels).resize((side, side), Image.Resampling.BILINEAR))
    references = "".join(f"<li>{html.escape(r)}</li>" for r in row.references)
    scores = "".join(_score_cell(row.scores.get(k)) for k in columns)
    note = f'<div class="note">{html.escape(row.note)}</div>' if row.note else ""
    strip = attention_strip(item)
    if strip is None:
        attention = "<td>(no spatial attention)</td>"
    else:
        words = "".join(f'<span style="width:{THUMB}px">{html.escape(w)}</span>' for w in item.words)
        layers = " / ".join(html.escape(name) for name in item.spatial)
        attention = (
            f'<td><div class="strip"><img src="{jpeg_uri(strip)}" alt="attention" title="rows: {layers}">'
            f'<div class="words">{words}</div></div></td>'
        )
    return (
        f'<tr><td class="num" data-value="{row.image_id}">{row.image_id}</td>'
        f'<td><img class="picture" src="{jpeg_uri(picture)}" alt="{html.escape(row.name)}" '
        f'title="{html.escape(row.name)}"></td>'
        f'<td class="text" data-value="{html.escape(item.caption)}">{html.escape(item.caption)}{note}</td>'
        f'<td class="text"><ul>{references}</ul></td>{scores}{attention}</tr>'
    )


STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; }
th { background: #f0f0f0; }
#images th.sortable { cursor: pointer; }
#images th.sortable::after { content: " \\2195"; color: #888; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { min-width: 12em; max-width: 22em; }
.note { font-size: 80%; color: #a33; }
ul { margin: 0; padding-left: 1.2em; font-size: 90%; }
.strip img { display: block; }
.words { display: flex; font-size: 11px; }
.words span { text-align: center; overflow: hidden; white-space: nowrap; }
"""

# Sorts the image table by the clicked column: numbers by value, text alphabetically; a second click reverses.
# Empty number cells (a score that was not measured) stay last in both directions.
SCRIPT = """
document.querySelectorAll("#images th.sortable").forEach(function (th) {
  th.addEventListener("click", function () {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.dataset.type === "num";
    var body = document.querySelector("#images tbody");
    var up = th.dataset.order !== "asc";
    th.dataset.order = up ? "asc" : "desc";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.value, y = b.cells[index].dataset.value;
      if (numeric) {
        var p = parseFloat(x), q = parseFloat(y);
        if (isNaN(p) || isNaN(q)) { return isNaN(p) - isNaN(q); }
        return up ? p - q : q - p;
      }
      return up ? x.localeCompare(y) : y.localeCompare(x);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def write_report(
    path: str | Path,
    rows: Sequence[ReportRow],
    scores: Mapping[str, float],
    *,
    title: str,
    grounding: Mapping[str, float | None] | None = None,
    split_size: int | None = None,
) -> Path:
    """Writes the report page of ``rows``; returns its path. ``split_size``: the images the metrics cover, when the
    rows are a sample of them (see :func:`spread`)."""
    total = split_size or len(rows)
    columns = [k for k in PER_IMAGE if any(k in r.scores for r in rows)]
    sample = (
        f"<p>{len(rows)} of the split's {total} images, spread evenly over the CIDEr-D ranking (worst and best "
        "included); the metrics above cover all of them.</p>"
        if len(rows) < total
        else f"<p>All {total} images of the split.</p>"
    )
    header = (
        '<th class="sortable" data-type="num">image id</th><th>image</th>'
        '<th class="sortable" data-type="text">generated</th><th>references</th>'
        + "".join(f'<th class="sortable" data-type="num">{METRIC_NAMES[k]}</th>' for k in columns)
        + "<th>attention per word</th>"
    )
    body = "\n".join(_row_html(row, columns) for row in rows)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Metrics</h2>
{_metrics_table(scores)}
{_grounding_table(grounding or {})}
<h2>Images</h2>
{sample}
<p>Click a column header to sort by it (again to reverse).</p>
<table id="images"><thead><tr>{header}</tr></thead>
<tbody>
{body}
</tbody></table>
<script>{SCRIPT}</script>
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def find_browser() -> str | None:
    """A Chromium-family browser on PATH (Debian: ``apt-get install chromium``), or None."""
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def screenshot(page: str | Path, png: str | Path, *, width: int = 1400, height: int = 1800) -> Path:
    """Renders ``page`` in headless Chromium and writes a ``width`` x ``height`` PNG of its top.

    ``--no-sandbox`` lets Chromium run as root (containers, CI); the page is our own file and loads nothing.
    """
    browser = find_browser()
    if browser is None:
        raise CaptioningError("no Chromium on PATH for the screenshot (Debian/Ubuntu: apt-get install chromium)")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--screenshot={png}",
        Path(page).resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not png.is_file():
        raise CaptioningError(f"{page}: Chromium could not render it ({result.stderr.strip()[-300:]})")
    return png
