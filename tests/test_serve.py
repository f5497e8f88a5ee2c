"""``captioning serve`` (captioning/serve.py, captioning/cli/serve.py): the real Gradio app on 127.0.0.1, called
over HTTP with gradio_client and plain httpx: captions equal the Python API's, bad uploads get one clear line and
the server goes on serving, requests queue one at a time, the page works in headless Chromium (where installed),
and the command's flags reach the server."""

import base64
import json
import runpy
import socket
import struct
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_module
from PIL import Image

from captioning.api import CaptioningModel
from captioning.errors import CaptioningError

gradio = pytest.importorskip("gradio", reason="captioning serve's extra: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx")
from gradio_client import Client, handle_file  # noqa: E402 - after the skip: gradio_client comes with gradio
from gradio_client.exceptions import AppError  # noqa: E402

from captioning import serve as server  # noqa: E402
from captioning.cli import serve as command  # noqa: E402

MAX_PIXELS = 20_000  # the test app's limit: the good images are 90 x 80 = 7,200 pixels
SCREENSHOT = Path(server.__file__).resolve().parents[1] / "benchmarks" / "serve_screenshot.py"  # wherever tests sit


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def picture(width: int = 90, height: int = 80, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: a gradient with a bright block in one corner, so a rotation changes what the model sees."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], axis=-1)
    pixels[: height // 3, : width // 3] = 255
    return np.clip(pixels + rng.integers(0, 40, pixels.shape), 0, 255).astype(np.uint8)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB and holds no pixel data: opening it reads only this header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


@pytest.fixture(scope="module")
def model() -> CaptioningModel:
    return CaptioningModel.from_module(tiny_module("sca"))  # SCA-CNN: spatial maps and channel weights, two layers


@pytest.fixture(scope="module")
def app(model):
    """The real app on a free port of 127.0.0.1, with a small pixel limit; its URL."""
    blocks = server.build_app(model, max_pixels=MAX_PIXELS)
    blocks.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield blocks
    blocks.close()


@pytest.fixture(scope="module")
def client(app) -> Client:
    return Client(app.local_url, verbose=False)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "good.png"
    Image.fromarray(picture()).save(path)
    return path


def test_a_png_over_http_gets_the_python_api_caption(app, client, model, good):
    for beam_size in (1, 3):
        result = client.predict(handle_file(good), beam_size, api_name="/caption")
        (expected,) = model.caption(good, beam_size=beam_size)
        assert set(result) == {"caption", "words", "score", "log_prob", "beam_size"}
        assert result["caption"] == expected.caption and result["words"] == expected.words
        assert result["score"] == pytest.approx(expected.score, abs=1e-5) and result["beam_size"] == beam_size
    other = client.predict(handle_file(_saved(picture(seed=1), good.parent / "other.png")), 3, api_name="/caption")
    assert abs(other["score"] - result["score"]) > 1e-4  # the comparison is not vacuous: the image matters

    # Plain HTTP, as documented: upload, queue the call, read its server-sent events; a base64 data URL works too.
    with httpx.Client(base_url=app.local_url, timeout=30) as http:
        (uploaded,) = http.post("/gradio_api/upload", files={"files": ("good.png", good.read_bytes())}).json()
        inline = "data:image/png;base64," + base64.b64encode(good.read_bytes()).decode()
        for image in ({"path": uploaded, "orig_name": "good.png"}, {"url": inline}):
            events = _call(http, image | {"meta": {"_type": "gradio.FileData"}}, 3)
            assert events["complete"][0] == result
        page = http.get("/config").json()
        assert all(part in str(page) for part in ("ResNet-18 + cbam", "attention: sca (order cs)", "64 x 64 px"))


def _saved(pixels: np.ndarray, path: Path, **save) -> Path:
    Image.fromarray(pixels).save(path, **save)
    return path


def _call(http, image: dict, beam_size: int) -> dict:
    """``POST /gradio_api/call/caption``, then its event stream -> {event: data} (``complete`` or ``error``)."""
    event_id = http.post("/gradio_api/call/caption", json={"data": [image, beam_size]}).json()["event_id"]
    stream = http.get(f"/gradio_api/call/caption/{event_id}").text
    lines = [line.split(": ", 1) for line in stream.splitlines() if line]
    return {name: json.loads(data) for (_, name), (_, data) in zip(lines[::2], lines[1::2], strict=True)}


def _truncated(path: Path, pixels: np.ndarray, fmt: str) -> Path:
    Image.fromarray(pixels).save(path, fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


BAD = {  # file name -> (how to write it, what the message must say)
    "notes.png": (lambda p: p.write_text("not a picture"), r"notes\.png: cannot read image"),
    "empty.png": (lambda p: p.write_bytes(b""), r"empty\.png: empty image file"),
    "half.png": (lambda p: _truncated(p, picture(), "PNG"), r"half\.png: cannot read image .*truncated"),
    "half.jpg": (lambda p: _truncated(p, picture(), "JPEG"), r"half\.jpg: cannot read image .*truncated"),
    "large.png": (lambda p: _saved(picture(200, 150), p), r"large\.png: 200 x 150 pixels .* over this server's limit"),
    "header.png": (lambda p: p.write_bytes(png_header(4000, 3000)), r"4000 x 3000 pixels \(12 megapixels\) is over"),
    "bomb.png": (lambda p: p.write_bytes(png_header(100_000, 100_000)), r"bomb\.png: refused, over .*decompression"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_upload_gets_one_clear_line_and_the_server_keeps_serving(client, model, good, tmp_path, name):
    write, message = BAD[name]
    path = tmp_path / name
    write(path)
    with pytest.raises(AppError, match=message) as error:
        client.predict(handle_file(path), 1, api_name="/caption")
    assert "\n" not in str(error.value) and str(tmp_path) not in str(error.value)  # the user's name, not the server's
    assert "/gradio" not in str(error.value)
    assert client.predict(handle_file(good), 1, api_name="/caption")["caption"] == model.caption(good)[0].caption


def test_a_beam_size_out_of_range_or_a_missing_image_gets_one_line(client, good):
    with pytest.raises(AppError, match=r"beam size must be 1\.\.5, got 9"):
        client.predict(handle_file(good), 9, api_name="/caption")
    with pytest.raises(AppError, match="no image: upload or paste one"):
        client.predict(None, 1, api_name="/caption")


def test_16_bit_cmyk_and_exif_rotated_uploads_are_converted_as_the_project_reads_images(client, model, tmp_path):
    pixels = picture()
    grey = pixels[..., 0]
    sixteen = _saved(grey.astype(np.uint16) * 257, tmp_path / "sixteen.png")  # 0..65535: scaled, not clipped white
    assert Image.open(sixteen).mode.startswith("I")
    got = client.predict(handle_file(sixteen), 2, api_name="/caption")
    assert got["score"] == pytest.approx(model.caption(Image.fromarray(grey), beam_size=2)[0].score, abs=1e-5)

    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(pixels).convert("CMYK").save(cmyk, quality=95)
    got = client.predict(handle_file(cmyk), 2, api_name="/caption")
    assert got["score"] == pytest.approx(model.caption(cmyk, beam_size=2)[0].score, abs=1e-5)

    rotated = tmp_path / "phone.jpg"  # stored sideways with orientation 6: show it turned 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(rotated, quality=95, exif=exif.tobytes())
    stored = np.asarray(Image.open(rotated).convert("RGB"))  # PIL decodes without applying the tag
    by_hand = np.ascontiguousarray(np.rot90(stored, k=-1))  # (W, H, 3): turned clockwise
    got = client.predict(handle_file(rotated), 2, api_name="/caption")
    (expected,) = model.caption(by_hand, beam_size=2)
    assert got["caption"] == expected.caption and got["score"] == pytest.approx(expected.score, abs=1e-5)
    assert abs(got["score"] - model.caption(stored, beam_size=2)[0].score) > 1e-4  # the rotation mattered


def test_concurrent_requests_queue_one_at_a_time_and_both_succeed(app, model, good, monkeypatch):
    running, most = [0], [0]
    lock = threading.Lock()
    caption_pixels = model.caption_pixels

    def slow(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)  # long enough for the second request to arrive while the first runs
        try:
            return caption_pixels(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(model, "caption_pixels", slow)

    def ask(beam_size: int) -> dict:
        return Client(app.local_url, verbose=False).predict(handle_file(good), beam_size, api_name="/caption")

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(ask, [1, 2]))
    monkeypatch.undo()
    assert [r["caption"] for r in results] == [model.caption(good, beam_size=k)[0].caption for k in (1, 2)]
    assert most[0] == 1  # default_concurrency_limit=1: the model never ran two requests at once


def _browser_script() -> dict | None:
    """benchmarks/serve_screenshot.py's functions where Chromium, chromedriver and selenium are installed."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    script = runpy.run_path(str(SCREENSHOT), run_name="serve_screenshot")
    return script if script["find_browser"]() else None


BROWSER = _browser_script()


@pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium, chromedriver or selenium (apt-get install chromium chromium-driver; pip install selenium)",
)
def test_the_page_captions_an_upload_in_headless_chromium(app, model, good, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with BROWSER["open_browser"]() as browser:
        browser.get(app.local_url)
        assert BROWSER["caption_in_page"](browser, good) == model.caption(good)[0].caption
        for figure in ("attention-0", "attention-1", "channels"):  # both layers' maps and the channel weights
            assert browser.find_element(By.CSS_SELECTOR, f"#{figure} img").size["height"] > 50
        assert "decoder attention: sca" in browser.find_element(By.CSS_SELECTOR, "#model-info").text

        notes = tmp_path / "notes.png"
        notes.write_text("not a picture")
        browser.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(notes))
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: not b.find_element(By.CSS_SELECTOR, "#caption textarea").get_attribute("value"))
        browser.find_element(By.CSS_SELECTOR, "#caption-button").click()
        toast = wait.until(lambda b: " ".join(t.text for t in b.find_elements(By.CSS_SELECTOR, ".toast-body")))
        assert "notes.png: cannot read image" in toast


def test_the_command_binds_to_localhost_by_default_and_passes_its_flags(model, monkeypatch):
    calls = []
    monkeypatch.setattr(command, "load", lambda source, *, device: calls.append((source, device)) or model)
    monkeypatch.setattr(command.server, "serve", lambda m, **kwargs: calls.append(kwargs))
    command.main(["--ckpt", "run/best.ckpt"])
    command.main(["--ckpt", "export", "--host", "0.0.0.0", "--port", "8080", "--device", "cpu", "--max-pixels", "99"])
    assert calls == [
        ("run/best.ckpt", torch.device("cpu")),
        {"host": "127.0.0.1", "port": 7860, "max_pixels": server.MAX_PIXELS, "source": "run/best.ckpt"},
        ("export", torch.device("cpu")),
        {"host": "0.0.0.0", "port": 8080, "max_pixels": 99, "source": "export"},
    ]
    for refused in (["--ckpt", "x", "--share"], ["--ckpt", "x", "--port", "0"], ["--port", "80"]):
        with pytest.raises(SystemExit) as stop:
            command.main(refused)
        assert stop.value.code == 2
    absent = f"cuda:{torch.cuda.device_count()}"
    for device, problem in (("gpu", "not a torch device"), (absent, "no such CUDA device")):
        with pytest.raises(CaptioningError, match=f"--device {device}: {problem}"):  # before the model loads
            command.main(["--ckpt", "run/best.ckpt", "--device", device])


def test_without_gradio_the_command_fails_in_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # what `import gradio` meets when it is missing
    monkeypatch.setattr(command, "load", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    with pytest.raises(CaptioningError, match=r"pip install -e '\.\[serve\]'") as error:
        command.main(["--ckpt", "run/best.ckpt"])
    assert "\n" not in str(error.value)


def test_a_port_in_use_is_one_line(model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CaptioningError, match=f"cannot serve on 127.0.0.1:{port}: the port is in use"):
            server.serve(model, port=port, block=False)
