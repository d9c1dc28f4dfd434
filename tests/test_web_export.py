"""`--format web`: a static folder that classifies in the browser with ONNX Runtime Web, checked in headless Chromium
against the PyTorch model and the served model, plus its refusals."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnarena
from cnnarena.serve.launch import ServerProcess

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow  # an export checked in a browser

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def web(digits_run, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("exports") / "web"
    assert cnnarena.load(digits_run).export(format="web", output=folder) == folder
    return folder


@pytest.fixture(scope="module")
def site(web):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(http.server.SimpleHTTPRequestHandler,
                                                               directory=str(web)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_the_folder_holds_the_page_the_model_and_the_runtime_and_its_card_says_what_was_checked(web):
    assert {p.name for p in web.iterdir()} == {"index.html", "app.js", "style.css", "model.onnx", "model.card.json",
                                                "ort.wasm.min.js", "ort-wasm-simd-threaded.mjs",
                                                "ort-wasm-simd-threaded.wasm"}
    card = json.loads((web / "model.card.json").read_text())
    check = card["web"]["browser_check"]
    assert check["images"] == 200 and check["top1_agreement_with_onnxruntime"] >= 0.99
    assert check["images_per_second"]["1"] > 0 and check["images_per_second"]["64"] > 0
    assert 0.5 < card["web"]["test_accuracy_onnxruntime"] <= 1


def _browser_answers(site: str, files: list[Path], width: int = 1100) -> list[dict]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page = browser.new_context(viewport={"width": width, "height": 800}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(site + "index.html")
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        page.set_input_files("#files", [str(f) for f in files])
        page.wait_for_function(f"window.cnnarenaResults.length >= {len(files)}", timeout=120_000)
        answers = page.evaluate("window.cnnarenaResults")
        assert page.locator("#bars li").count() == 5 and page.locator("#results tbody tr").count() == len(files)
        browser.close()
    assert not errors, errors
    return answers


def test_the_page_in_chromium_agrees_with_pytorch_on_200_test_images(digits_run, site, tmp_path):
    import torch

    from cnnarena.evaluate.predict import load_run_model
    from cnnarena.export.quantize import run_images

    test = run_images(digits_run).test
    pick = np.sort(np.random.default_rng(1).permutation(len(test))[:200])
    images = test.images[pick]
    files = []
    for k, image in enumerate(images.numpy()):
        files.append(tmp_path / f"{k:03d}.png")
        Image.fromarray(image[0]).save(files[-1])
    with torch.no_grad():
        expected = load_run_model(digits_run).eval()(images.float() / 255).argmax(1).numpy()
    seen = np.array([a["index"] for a in _browser_answers(site, files)])
    assert np.mean(seen == expected) >= 0.99


def test_the_page_and_the_server_name_the_same_class(digits_run, site, tmp_path):
    import httpx
    from sklearn.datasets import load_digits

    files = []
    for k in (5, 17, 42):
        files.append(tmp_path / f"digit-{k}.png")
        Image.fromarray((load_digits().images[k] * 255 / 16).astype(np.uint8)).save(files[-1])
    in_browser = [a["label"] for a in _browser_answers(site, files, width=390)]
    with ServerProcess(digits_run, "--log-level", "warning") as server:
        served = [httpx.post(server.url + "/v1/predict", content=f.read_bytes(),
                             headers={"Content-Type": "image/png"}).json()["results"][0]["label"] for f in files]
    assert in_browser == served


def test_a_folder_that_is_not_an_export_is_refused_and_left_alone(digits_run, tmp_path):
    mine = tmp_path / "site"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    done = subprocess.run([sys.executable, "-m", "cnnarena.cli", "export", str(digits_run), "--format", "web",
                           "--output", str(mine)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not a cnnarena web export" in done.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


def test_without_npm_or_a_fetched_runtime_the_error_is_one_line(digits_run, tmp_path):
    env = {**os.environ, "CNNARENA_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path / "home"),
           "PATH": os.path.dirname(sys.executable)}  # no npm on it
    out = tmp_path / "web"
    done = subprocess.run([sys.executable, "-m", "cnnarena.cli", "export", str(digits_run), "--format", "web",
                           "--output", str(out)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and "install npm" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()
