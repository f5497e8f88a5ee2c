"""Attention figures, CBAM gates and the HTML report, on real (tiny) models: files written and read back."""

import base64
import html.parser
import io
import re
import subprocess

import numpy as np
import pytest
import torch
from conftest import tiny_module
from PIL import Image

from captioning.data.images import denormalize_images, normalize_image
from captioning.data.shapes import generate_shapes
from captioning.viz.attention import Grid, overlay, plot_word_attention, upsample_maps, word_grid
from captioning.viz.channels import plot_channel_attention, top_channels
from captioning.viz.figures import Captioned, draw, split_generation
from captioning.viz.gates import backbone_gates, gated_blocks, plot_gates
from captioning.viz.report import ReportRow, attention_strip, find_browser, screenshot, spread, write_report


def _captioned(attention: str, images: torch.Tensor) -> list[Captioned]:
    module = tiny_module(attention).eval()
    with torch.no_grad():
        captions, generation = module.generate(images)
    return split_generation(captions, generation, denormalize_images(images))


def _panel(png, grid: Grid, row: int, column: int) -> np.ndarray:
    return np.asarray(Image.open(png).convert("RGB").crop(grid.box(row, column)), dtype=np.float32)


def test_denormalize_inverts_normalize():
    pixels = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    back = denormalize_images(normalize_image(pixels)[None])[0]  # (8, 8, 3)
    assert np.array_equal(back, pixels.permute(1, 2, 0).numpy())


def test_upsampled_maps_keep_the_peak_and_one_scale_for_all_words():
    alphas = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.25, 0.25, 0.25, 0.25]])  # (T=2, N=4): 2 x 2 grid
    maps = upsample_maps(alphas, (8, 8))
    assert maps.shape == (2, 8, 8) and maps.max() == pytest.approx(1.0)
    assert np.unravel_index(maps[0].argmax(), (8, 8)) >= (4, 4)  # the bottom-right cell
    assert np.allclose(maps[1], 0.25)  # a uniform map stays flat at its own level, not stretched to 1
    with pytest.raises(ValueError, match="not a square grid"):
        upsample_maps(torch.ones(2, 6), (8, 8))
    image = np.zeros((8, 8, 3), np.uint8)
    assert overlay(image, maps[1]).shape == (8, 8, 3)


def test_word_grid_places_every_word_of_every_layer_once():
    grid, places = word_grid(words=11, layers=2, columns=5)  # 4 words per row: 3 blocks of 2 layer rows
    assert (grid.rows, grid.columns) == (6, 5)
    assert len(set(places)) == 22 and all(0 < column < 5 for _, column in places)
    assert places[0] == (0, 1) and places[11] == (1, 1)  # word 0 of layer 0, then of layer 1 below it
    assert places[4] == (2, 1) and places[15] == (3, 1)  # word 4 wraps to the next block


def test_soft_attention_figure_has_the_grid_size_and_a_panel_per_word(tmp_path):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    item = _captioned("soft", images)[0]
    assert set(item.attention) == {"alpha"} and list(item.spatial) == ["attention"]
    assert item.attention["alpha"].shape == (len(item.words), 4)  # 64 px / 32 = 2 x 2 locations
    written = draw(item, tmp_path / "soft")
    assert [p.name for p in written] == ["soft_attention.png"]  # no channel attention: no channel figure
    grid, _ = word_grid(len(item.words), 1, 9)
    assert Image.open(written[0]).size == grid.size_pixels


def test_sca_figures_draw_both_layers_and_the_channel_weights(tmp_path):
    torch.manual_seed(2)
    item = _captioned("sca", torch.randn(1, 3, 64, 64))[0]
    assert len(item.spatial) == 2 and len(item.channel) == 2  # C-S over two layers
    written = draw(item, tmp_path / "sca", top_k=3)
    assert [p.name for p in written] == ["sca_attention.png", "sca_channels.png"]
    grid, _ = word_grid(len(item.words), 2, 9)
    assert Image.open(written[0]).size == grid.size_pixels
    assert Image.open(written[1]).size[1] > 100


def test_word_panels_show_the_words_own_maps(tmp_path):
    """Two words with opposite maps: their panels differ, and each panel is hottest (red) where its map peaks."""
    image = np.full((64, 64, 3), 128, np.uint8)
    alphas = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # top-left, then bottom-right
    png = plot_word_attention(image, ["left", "right"], {"attention": alphas}, tmp_path / "a.png")
    grid, places = word_grid(2, 1, 9)
    first, second = (_panel(png, grid, *places[i]) for i in range(2))
    assert np.abs(first - second).mean() > 20
    side = first.shape[0]
    red = lambda panel, y, x: panel[y, x, 0] - panel[y, x, 2]  # noqa: E731  (jet: red hot, blue cold)
    assert red(first, side // 6, side // 6) > red(first, 5 * side // 6, 5 * side // 6) + 50
    assert red(second, 5 * side // 6, 5 * side // 6) > red(second, side // 6, side // 6) + 50


def test_channel_figure_marks_each_words_top_channels(tmp_path):
    betas = torch.softmax(torch.randn(3, 40, generator=torch.Generator().manual_seed(0)), dim=1)  # (T, C)
    top = top_channels(betas, 4)
    assert top.shape == (3, 4)
    for t in range(3):
        assert set(top[t].tolist()) == set(np.argsort(-betas[t].numpy())[:4].tolist())
    png = plot_channel_attention(["a", "b", "<eos>"], {"layer4": betas}, tmp_path / "c.png", top_k=4)
    assert Image.open(png).size[0] > 500
    with pytest.raises(ValueError, match="3 words but 2"):
        plot_channel_attention(["a", "b", "c"], {"layer4": betas[:2]}, tmp_path / "d.png")


def test_cbam_gates_are_the_gates_the_blocks_apply(tmp_path):
    module = tiny_module("soft").eval()
    encoder = module.captioner.encoder
    assert list(gated_blocks(encoder.backbone)) == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    seen = {}  # the spatial gate's own input and output, captured independently of backbone_gates
    spatial = encoder.backbone.layer2[0].attention.spatial
    handle = spatial.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    gates = backbone_gates(encoder, images, ["layer2.0", "layer4.1"])
    handle.remove()
    block = gates["layer2.0"]
    assert block.channel.shape == (2, 16) and block.spatial.shape == (2, 8, 8)  # width 8: layer2 has 16 channels
    assert torch.allclose(seen["y"], seen["x"] * block.spatial[:, None])  # M_s(F') * F'
    assert ((block.channel > 0) & (block.channel < 1)).all()
    assert plot_gates(np.zeros((64, 64, 3), np.uint8), gates, 1, tmp_path / "g.png").is_file()
    with pytest.raises(ValueError, match="no CBAM/SE block named"):
        backbone_gates(encoder, images, ["layer9.0"])


def test_spread_keeps_worst_and_best_evenly():
    cider = {i: float((i * 37) % 101) for i in range(101)}
    picked = spread(cider, 11)
    assert len(picked) == 11 and picked == sorted(picked)
    scores = sorted(cider[i] for i in picked)
    assert scores[0] == min(cider.values()) and scores[-1] == max(cider.values())
    assert spread(cider, 500) == sorted(cider)
    assert spread(cider, 1) == [min(cider, key=cider.get)]  # one image: the worst
    with pytest.raises(ValueError, match="at least 1"):
        spread(cider, 0)


class _Page(html.parser.HTMLParser):
    """Collects the report's image rows: their cells' text and data-value, and the images' decoded sizes."""

    def __init__(self):
        super().__init__()
        self.rows, self.images, self.in_body, self.cell = [], [], False, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append([])
        elif tag == "td" and self.in_body:
            self.cell = {"value": attrs.get("data-value"), "text": ""}
            self.rows[-1].append(self.cell)
        elif tag == "img" and self.in_body:
            head, data = attrs["src"].split(",", 1)
            assert head == "data:image/jpeg;base64"
            self.images.append(Image.open(io.BytesIO(base64.b64decode(data))).size)

    def handle_data(self, data):
        if self.cell is not None:
            self.cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td":
            self.cell = None
        if tag == "tbody":
            self.in_body = False


def test_report_page_holds_every_row_its_scores_and_images(tmp_path):
    torch.manual_seed(3)
    items = _captioned("sca", torch.randn(3, 3, 64, 64))
    rows = [
        ReportRow(10 + i, f"{i}.png", [f"ref {i} <&>", "another"], {"CIDEr": 0.5 * i, "Bleu_4": 0.1}, item)
        for i, item in enumerate(items)
    ]
    strip = attention_strip(items[0], size=32)
    assert strip.shape == (2 * 32, len(items[0].words) * 32, 3)  # two layers x words
    rows[1].note = "a re-run said <this>"
    del rows[2].scores["Bleu_4"]  # not measured for this image: an empty cell that sorts last
    scores = {"Bleu_1": 0.8, "Bleu_4": 0.3, "CIDEr": 1.25}
    grounding = {"pointing.x": 0.5, "mass.x": 0.4, "area.x": 0.2, "object_words": 4.0, "absent_object_words": 1.0}
    page = write_report(tmp_path / "r.html", rows, scores, title="t <1>", grounding=grounding, split_size=5)
    text = page.read_text()
    assert "t &lt;1&gt;" in text and "3 of the split's 5 images" in text
    assert "<td>1.250</td>" in text and "pointing game" in text
    assert text.count('<div class="note">a re-run said &lt;this&gt;</div>') == 1
    parsed = _Page()
    parsed.feed(text)
    assert [int(r[0]["value"]) for r in parsed.rows] == [10, 11, 12]
    assert [r[2]["value"] for r in parsed.rows] == [item.caption for item in items]
    assert parsed.rows[1][2]["text"] == items[1].caption + "a re-run said <this>"  # the note under the caption
    assert "ref 0 <&>" in parsed.rows[0][3]["text"]  # escaped in the file, intact in the page
    assert [float(r[4]["value"]) for r in parsed.rows] == [0.0, 0.5, 1.0]  # CIDEr-D, the first score column
    assert parsed.images[0] == (64, 64)  # the picture, then its strip of 64-pixel panels
    assert parsed.images[1] == (64 * len(items[0].words), 2 * 64)
    assert "addEventListener" in text and text.count('class="sortable"') == 4
    assert parsed.rows[2][5] == {"value": "", "text": "-"} and parsed.rows[0][5]["value"] == "0.100000"
    assert "http" not in text.replace("http-equiv", "")  # self-contained: nothing to fetch


def test_report_shows_object_naming_also_without_spatial_attention(tmp_path):
    grounding = {"absent_object_words": 1.0, "right_object": 0.5, "one_object_images": 4.0}  # no pointing: no maps
    grounding |= {"named.traffic light": 2.0, "present.traffic light": 4.0, "correct.traffic light": 1.0}
    grounding |= {"named.car": 1.0, "present.car": 0.0, "correct.car": 0.0}
    text = write_report(tmp_path / "r.html", [], {"CIDEr": 1.0}, title="t", grounding=grounding).read_text()
    assert "the model has no spatial attention to score" in text and "<th>pointing game</th>" not in text
    assert "<h2>Object naming</h2><p>Object naming: names the right object (and no other) on 50.0% of 4 one-" in text
    head = "".join(f"<th>{c}</th>" for c in ("category", "named", "present", "named / present", "precision", "recall"))
    assert f"<tr>{head}</tr>" in text
    cells = ("traffic light", "2", "4", "0.500", "0.500", "0.250"), ("car", "1", "0", "-", "0.000", "-")
    rows = ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells]
    assert rows[0] + rows[1] in text  # the most present category first


def dump_dom(page) -> str:
    """The page's DOM after its scripts ran in headless Chromium."""
    command = [find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def _saturated_share(png) -> float:
    """Share of strongly colored pixels: the shapes and heat maps are, the page's text and tables are not."""
    hsv = np.asarray(Image.open(png).convert("HSV"), np.float32)  # (H, W, 3)
    return float(((hsv[..., 1] > 120) & (hsv[..., 2] > 60)).mean())


@pytest.mark.skipif(find_browser() is None, reason="no Chromium on PATH (Debian/Ubuntu: apt-get install chromium)")
def test_report_renders_with_its_images_in_headless_chromium(tmp_path):
    generate_shapes(tmp_path / "shapes", train=0, val=0, test=6, seed=1, show_progress=False)
    paths = sorted((tmp_path / "shapes" / "images" / "test").glob("*.png"))
    pixels = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))) for p in paths])
    images = torch.stack([normalize_image(p.permute(2, 0, 1)) for p in pixels])  # (6, 3, 96, 96)
    module = tiny_module("soft").eval()
    with torch.no_grad():
        captions, generation = module.generate(images)
    items = split_generation(captions, generation, pixels.numpy())
    cider = [0.5, 0.1, 0.4, 0.2, 0.9, 0.3]
    bleu = [0.2, None, 0.2, 0.3, 0.1, 0.2]  # image 1 has no BLEU-4
    rows = [
        ReportRow(i, path.name, ["a reference"], {"CIDEr": c} | ({"Bleu_4": b} if b is not None else {}), item)
        for i, (path, item, c, b) in enumerate(zip(paths, items, cider, bleu, strict=True))
    ]
    page = write_report(tmp_path / "report.html", rows, {"CIDEr": 1.0}, title="screenshot test")
    shot = screenshot(page, tmp_path / "report.png", width=1200, height=1000)
    assert Image.open(shot).size == (1200, 1000)
    # the same page without its images: what the images add must be visible in the rendered page
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'src="data:[^"]*"', 'src=""', page.read_text()))
    bare_shot = screenshot(bare, tmp_path / "bare.png", width=1200, height=1000)
    assert _saturated_share(shot) > 0.03 and _saturated_share(bare_shot) < 0.002

    # the sort script, run by the browser: click CIDEr-D twice (descending), then BLEU-4 once (ascending)
    clicks = """<script>var th = document.querySelectorAll("#images th.sortable");
    th[2].click(); th[2].click(); th[3].click();</script></body>"""
    clicked = tmp_path / "clicked.html"
    clicked.write_text(page.read_text().replace("</body>", clicks))
    dom = dump_dom(clicked)
    order = [int(i) for i in re.findall(r'<tr><td class="num" data-value="(\d+)">', dom)]
    assert order == [4, 0, 2, 5, 3, 1]  # BLEU-4 ascending, the image without one last; CIDEr-D descending breaks ties
