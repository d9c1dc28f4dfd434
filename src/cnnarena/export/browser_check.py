"""A web export checked where it runs: the folder served over loopback, opened in headless Chromium, given test
images as files the way a person picks them, its answers compared with ONNX Runtime's in Python, and its speed
measured in the browser.

Needs Playwright and a Chromium on the PATH (Debian's `chromium`); without them the card says the check was not run,
and why.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
LOAD_SECONDS = 120


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".mjs": "text/javascript", ".js": "text/javascript"}

    def log_message(self, *args: Any) -> None:
        pass


def unavailable() -> str | None:
    """Why no browser check can run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright)"
    if _chromium() is None:
        return "no Chromium found (Debian: apt install chromium)"
    return None


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def check_in_browser(folder: Path, images: np.ndarray, seconds: float = 2.0) -> dict[str, Any]:
    """Classify uint8 N×C×H×W `images` (as PNG files) with the page in `folder`; top-1 indices and images/s."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory(prefix="cnnarena-web-check-") as tmp, sync_playwright() as p:
            paths = []
            for k, image in enumerate(images):
                path = Path(tmp) / f"test-{k:04d}.png"
                Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(path)
                paths.append(str(path))
            browser = p.chromium.launch(executable_path=_chromium(), args=ARGS)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
                page.wait_for_selector("body[data-ready='1']", timeout=LOAD_SECONDS * 1000)
                page.set_input_files("#files", paths)
                page.wait_for_function(f"window.cnnarenaResults.length >= {len(paths)}", timeout=LOAD_SECONDS * 1000)
                answers = page.evaluate("window.cnnarenaResults.map(r => r.index === undefined ? -1 : r.index)")
                speed = {str(b): round(page.evaluate(f"window.cnnarenaSpeed({b}, {seconds})"), 1) for b in (1, 64)}
                version = browser.version
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return {"browser": f"Chromium {version} (headless)", "top1": answers, "images_per_second": speed}
