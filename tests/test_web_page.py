"""The web page in headless Chromium against a real server: upload, bars, errors, and webcam mode."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnarena.serve.launch import ServerProcess

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow  # a browser and a server process

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        # A synthetic camera that needs no permission prompt: webcam mode runs for real.
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def run(digits_run) -> Path:
    return digits_run


@pytest.fixture(scope="module")
def server(run):
    with ServerProcess(run, "--log-level", "warning") as server:
        yield server


@pytest.fixture(scope="module")
def page(server):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1100, "height": 720})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.wait_for_function("document.querySelector('#model').textContent.includes('simple-2conv')")
        yield page
        assert not errors, errors  # no JavaScript exception anywhere in the session
        browser.close()


@pytest.fixture(scope="module")
def confident_digit(run, tmp_path_factory) -> tuple[Path, str]:
    """The test digit the run classified right with the most confidence, as its 8×8 PNG file."""
    from sklearn.datasets import load_digits

    rows = [r for r in csv.DictReader((run / "predictions.csv").open()) if r["correct"] == "1"]
    best = max(rows, key=lambda r: float(r["confidence"]))
    pixels = (load_digits().images[int(best["id"].split("/")[1])] * (255 / 16)).round().astype(np.uint8)
    path = tmp_path_factory.mktemp("upload") / f"digit-{best['true']}.png"
    Image.fromarray(pixels).save(path)
    return path, best["predicted"]


def test_upload_shows_label_bars_and_latency(page, confident_digit, artifacts_dir):
    path, label = confident_digit
    page.set_input_files("#file", str(path))
    page.wait_for_function(f"document.querySelector('#label').textContent === {label!r}")
    bars = page.locator("#bars li")
    assert bars.count() == 5
    assert bars.nth(0).locator(".name").inner_text() == label
    page.wait_for_timeout(300)  # the bars' width transition
    # Rendered widths, in pixels: the bars must really be drawn, longest first.
    widths = [bars.nth(i).locator(".fill").evaluate("e => e.getBoundingClientRect().width") for i in range(5)]
    track = bars.nth(0).locator(".track").evaluate("e => e.getBoundingClientRect().width")
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[4] and widths[0] > 0.2 * track
    assert "ms" in page.inner_text("#latency") and page.locator("#preview").is_visible()
    assert page.locator("#error").is_hidden()
    shot = artifacts_dir / "web_page.png"  # conftest.py: pytest's tmp dir, not the working tree
    page.screenshot(path=str(shot), full_page=True)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert shot.stat().st_size > 20_000 and img.shape[0] >= 600 and img.shape[1] >= 1000
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # a rendered page, not a blank canvas


def test_bad_file_shows_the_servers_error(page, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("this is not an image")
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.inner_text("#error")


def test_webcam_mode_classifies_frame_after_frame(page, server, artifacts_dir):
    import httpx

    before = httpx.get(server.url + "/v1/health").json()["images"]
    page.click("#camera")
    page.wait_for_selector("#video:not([hidden])")
    start = int(page.evaluate("Number(document.body.dataset.predictions || 0)"))
    page.wait_for_function(f"Number(document.body.dataset.predictions || 0) >= {start + 5}", timeout=30_000)
    assert "frames/s" in page.inner_text("#camera-status") and page.inner_text("#label") in [str(i) for i in range(10)]
    page.screenshot(path=str(artifacts_dir / "web_page_webcam.png"), full_page=True)
    page.click("#camera")  # stop: frames stop arriving at the server
    page.wait_for_selector("#video", state="hidden")
    after = httpx.get(server.url + "/v1/health").json()["images"]
    assert after - before >= 5
    page.wait_for_timeout(300)
    assert httpx.get(server.url + "/v1/health").json()["images"] <= after + 1


def test_the_heat_map_toggle_shows_the_overlay_for_uploads_and_the_webcam(page, confident_digit, artifacts_dir):
    path, label = confident_digit
    page.set_input_files("#file", str(path))
    page.wait_for_function(f"document.querySelector('#label').textContent === {label!r}")
    assert page.locator("#heat-box").is_hidden()  # off by default: no heat-map requests
    page.check("#heat-on")  # turning it on explains the image already shown
    page.wait_for_function("Number(document.body.dataset.heatmaps || 0) >= 1")
    heat = page.locator("#heat")
    box = heat.evaluate("e => [e.naturalWidth, e.getBoundingClientRect().width, e.getBoundingClientRect().height]")
    assert box[0] >= 128 and box[1] > 100 and box[2] > 100, box  # the PNG decoded and drawn at full size
    assert page.inner_text("#heat-caption") == f"gradcam of {label}"
    shot = artifacts_dir / "web_page_heat_map.png"
    page.screenshot(path=str(shot), full_page=True)
    # the overlay's jet colours are on the screen: strongly red or blue pixels that the page has nowhere else
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    vivid = (np.abs(pixels[..., 0] - pixels[..., 2]) > 150).sum()
    assert vivid > 2000, vivid

    before = int(page.evaluate("Number(document.body.dataset.heatmaps || 0)"))
    page.click("#camera")
    page.wait_for_function(f"Number(document.body.dataset.heatmaps || 0) >= {before + 3}", timeout=30_000)
    page.screenshot(path=str(artifacts_dir / "web_page_webcam_heat_map.png"), full_page=True)
    page.click("#camera")
    page.wait_for_selector("#video", state="hidden")
    page.uncheck("#heat-on")
    assert page.locator("#heat-box").is_hidden()


def test_a_run_tested_with_tta_shows_the_one_view_accuracy_the_server_predicts_with(page, tmp_path):
    import json

    from cnnarena.config import build_config
    from cnnarena.run import train_run

    run = tmp_path / "tta"
    train_run(build_config(None, {"data": "digits", "model": "fast", "epochs": 1, "image_size": 8}), run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tta"] and "test_accuracy_one_view" in metrics
    # two values the page cannot confuse (on 360 test digits the two accuracies may round alike)
    metrics.update(test_accuracy=0.9876, test_accuracy_one_view=0.5432)
    (run / "metrics.json").write_text(json.dumps(metrics))
    with ServerProcess(run, "--log-level", "warning") as server:
        other = page.context.new_page()  # the module's browser: one Playwright per process
        try:
            other.goto(server.url + "/")
            other.wait_for_function("document.querySelector('#model').textContent.includes('test accuracy')")
            shown = other.inner_text("#model")
        finally:
            other.close()
    assert "test accuracy 54.3%" in shown and "98.8" not in shown
