"""The page in headless Chromium (Debian's `chromium`, driven by playwright; no browser is downloaded):
sign in, type a prompt, submit, watch the progress move, and play the finished video.

Set SORAFLOW_SCREENSHOT=path.png to keep the screenshot (docs/images/serve.png comes from this test
run against the shipped model: SORAFLOW_SERVE_MODEL=soraflow/assets/default)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from serve_helpers import API_KEY, Server, make_random_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)"),
]


def test_page_generates_and_plays_a_video(tmp_path):
    model = Path(os.environ["SORAFLOW_SERVE_MODEL"]) if os.environ.get("SORAFLOW_SERVE_MODEL") else (
        make_random_model(tmp_path / "model"))
    server = Server(model, tmp_path / "data", tmp_path / "server.log").start()
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(server.url + "/")
            page.fill("input[name=api_key]", API_KEY)  # the key is asked for once; a cookie keeps it
            page.click("input[type=submit]")
            page.wait_for_selector("#prompt")
            page.fill("#prompt", "a red ball bouncing on grass")
            page.fill("#steps", os.environ.get("SORAFLOW_SERVE_STEPS", "150"))
            page.fill("#seed", "3")
            page.click("#submit")

            seen, deadline = [], time.monotonic() + 60
            while time.monotonic() < deadline:
                value = page.eval_on_selector("#progress", "p => Number(p.value)")
                seen.append(value)
                if value == 100:
                    break
                time.sleep(0.05)
            assert any(0 < v < 100 for v in seen), seen  # the bar moved before the end
            assert seen[-1] == 100 and seen == sorted(seen)

            page.wait_for_function("document.querySelector('#player').duration > 0", timeout=20_000)
            duration = page.eval_on_selector("#player", "v => v.duration")
            assert duration > 0 and page.is_visible("#download")
            assert page.get_attribute("#download", "href").endswith("/content")
            page.wait_for_function("document.querySelector('#player').currentTime > 0", timeout=20_000)  # it plays
            page.wait_for_selector("#gallery .card img")  # the gallery shows it with its thumbnail
            assert "seed 3" in page.inner_text("#gallery")
            shot = Path(os.environ.get("SORAFLOW_SCREENSHOT") or tmp_path / "serve.png")
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            browser.close()
    finally:
        server.stop()
