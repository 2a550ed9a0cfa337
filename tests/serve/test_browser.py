"""The page in a real headless browser: upload a radiograph, see the overlay and probabilities.

Uses Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it when missing)
driven by Playwright with ``executable_path``: no browser is downloaded. Skips, saying why,
only when no chromium binary is on this machine. ``MULTIMIX_SERVE_SCREENSHOT=PATH`` also saves
a screenshot of the page (how docs/serve.png was made).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

import multimix.api as mm
from multimix.serve.app import ServeOptions, create_app

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    given = os.environ.get("MULTIMIX_CHROMIUM")
    if given and Path(given).is_file():
        return given
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(served_run):
    import uvicorn

    port = free_port()
    app = create_app(mm.load(served_run), ServeOptions())
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


def test_upload_shows_overlay_probabilities_and_maps(server, phantom_dirs):
    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    image = sorted((phantom_dirs["seg"] / "images").glob("*.png"))[0]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=binary, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 720})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server)
            page.wait_for_function("document.getElementById('model').textContent.includes('run')")
            page.set_input_files("#files", str(image))
            page.wait_for_selector(".card[data-state=done]", timeout=60_000)
            canvas = page.locator("canvas.view").first
            assert int(canvas.get_attribute("data-outline-pixels")) > 0  # the mask outline
            assert canvas.get_attribute("data-showing") == "none"
            rows = page.locator("table.probs tr").all_inner_texts()
            assert [r.split()[0] for r in rows] == ["normal", "pneumonia"]
            assert all(0.0 <= float(r.split()[1]) <= 1.0 for r in rows)
            for method in ("gradcam", "ig", "saliency"):
                page.click(f".toggle button[data-method={method}]")
                assert canvas.get_attribute("data-showing") == method
            links = page.locator(".links a").all_inner_texts()
            assert links == [f"{image.stem}-lungs.png", f"{image.stem}.json"]
            page.set_input_files("#files", {"name": "notes.png", "mimeType": "image/png",
                                            "buffer": b"not an image" * 20})  # fmt: skip
            page.wait_for_selector(".card[data-state=error]", timeout=30_000)
            assert "not a PNG, JPEG or DICOM" in page.locator(".card .error").inner_text()
            assert not errors, errors
            shot = os.environ.get("MULTIMIX_SERVE_SCREENSHOT")
            if shot:
                page.click(".card[data-state=done] .toggle button[data-method=gradcam]")
                page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()
