"""The README's screenshot of ``captioning serve`` (docs/serve.png): the real app on a checkpoint, driven by headless
Chromium: upload an image, press Caption, wait for the caption and every figure, save the whole page.

Run: ``.venv/bin/python benchmarks/serve_screenshot.py --ckpt outputs/demo/main/checkpoints/best.ckpt
--image data/shapes/images/test/<one>.png --out docs/serve.png``. Needs Chromium, its WebDriver and selenium
(Debian/Ubuntu: ``apt-get install chromium chromium-driver``; ``pip install selenium``). tests/test_serve.py drives
the page with :func:`open_browser` and :func:`caption_in_page`.
"""

from __future__ import annotations

import argparse
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WIDTH = 1280  # CSS pixels of the window; the screenshot is as tall as the page


def find_browser() -> tuple[str, str] | None:
    """Chromium and its WebDriver (``chromedriver``) on PATH, or None."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@contextmanager
def open_browser(*, width: int = WIDTH, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """Headless Chromium under selenium, quit on exit. ``--no-sandbox`` lets it run as root (containers, CI);
    selenium is given the WebDriver on PATH, so it downloads nothing."""
    found = find_browser()
    if found is None:
        raise RuntimeError(
            "no Chromium or chromedriver on PATH (Debian/Ubuntu: apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(found[1]))
    try:
        yield browser
    finally:
        browser.quit()


def caption_in_page(browser: webdriver.Chrome, image: str | Path, *, timeout: float = 60) -> str:
    """On the open page: uploads ``image``, presses Caption, waits for the caption and every figure; returns the
    caption as the page shows it."""
    wait = WebDriverWait(browser, timeout)
    upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#image input[type=file]"))
    upload.send_keys(str(Path(image).resolve()))
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#image img"))  # uploaded and previewed
    browser.find_element(By.CSS_SELECTOR, "#caption-button").click()
    caption = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#caption textarea").get_attribute("value"))
    figures = browser.find_elements(By.CSS_SELECTOR, "[id^=attention-], #channels")
    visible = [f for f in figures if f.is_displayed()]
    wait.until(lambda b: all(f.find_elements(By.CSS_SELECTOR, "img") for f in visible))
    wait.until(lambda b: b.execute_script("return [...document.images].every(i => i.complete && i.naturalHeight)"))
    return caption


def screenshot(browser: webdriver.Chrome, out: Path) -> Path:
    """The whole page as a PNG: the window is made as tall as the page first (its height includes the browser's
    frame, even headless, hence the difference; growing the window can reflow the page, hence a few rounds)."""
    for _ in range(3):
        page, inner = browser.execute_script("return [document.documentElement.scrollHeight, window.innerHeight]")
        if page <= inner:
            break
        browser.set_window_size(WIDTH, browser.get_window_size()["height"] + page - inner)
    out.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(out))
    return out


def main() -> None:
    import captioning
    from captioning.serve import build_app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint, exported folder or Hub id")
    parser.add_argument("--image", required=True, type=Path, help="the image to caption")
    parser.add_argument("--out", type=Path, default=Path("docs/serve.png"))
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_app(captioning.load(args.ckpt), source=Path(args.ckpt).name)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with open_browser() as browser:
            browser.get(app.local_url)
            caption = caption_in_page(browser, args.image)
            print(f"{args.image}: {caption}\n{screenshot(browser, args.out)}")
    finally:
        app.close()


if __name__ == "__main__":
    main()
