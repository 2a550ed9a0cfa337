"""Screenshot of the ``multimix serve`` page with one radiograph predicted (docs/serve.png).

    python benchmarks/serve_screenshot.py --run RUN --image IMG [--image IMG2] --out docs/serve.png

Serves RUN on a free localhost port, opens the page in Debian's headless chromium (Playwright
with ``executable_path``; no browser download), uploads the images, shows the Grad-CAM map of
the first, and saves a full-page screenshot.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

import multimix.api as mm
from multimix.serve.app import ServeOptions, create_app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--image", type=Path, action="append", required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/serve.png"))
    ap.add_argument("--method", default="gradcam")
    args = ap.parse_args()
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("no chromium binary (apt-get install chromium)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(mm.load(args.run), ServeOptions()), host="127.0.0.1",
                       port=port, log_level="warning")
    )  # fmt: skip
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 560})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('model').textContent.includes('run')")
        for image in reversed(args.image):  # newest first on the page: keep the given order
            page.set_input_files("#files", str(image))
            page.wait_for_selector(".card[data-state=done]", timeout=120_000)
            time.sleep(0.5)
        page.click(f".card >> nth=0 >> .toggle button[data-method={args.method}]")
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    server.should_exit = True
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
