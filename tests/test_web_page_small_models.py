"""The web page for the models people often train: two classes with long, many-word names, and ten classes, on a
laptop screen (1,366 px) and a phone's (390 px), in headless Chromium against a real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnarena
from cnnarena.serve.launch import ServerProcess

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow  # trains a model, starts servers and a browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
# as a waste sorter names its classes: several words, one of them long
NAMES = {"zero": "Recyclable cardboard packaging", "one": "Trouser"}
WIDTHS = (1366, 390)


@pytest.fixture(scope="module")
def two_class_run(tmp_path_factory) -> tuple[Path, Path]:
    """A simple-2conv trained on real digits 0 and 1 (32 px PNGs), classes renamed with --class-map; and a 0."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("two-classes")
    digits = load_digits()
    for label, folder in ((0, "zero"), (1, "one")):
        (root / "data" / folder).mkdir(parents=True)
        for k in np.flatnonzero(digits.target == label):
            image = Image.fromarray((digits.images[k] * 255 / 16).astype(np.uint8)).resize((32, 32))
            image.save(root / "data" / folder / f"{k:04d}.png")
    renames = root / "classes.yaml"
    renames.write_text("".join(f"{folder}: {name}\n" for folder, name in NAMES.items()))
    run = cnnarena.train(root / "data", model="simple-2conv", out=root / "run", epochs=2, class_map=renames)
    assert sorted(run.classes) == sorted(NAMES.values())
    return run.path, root / "data" / "zero" / sorted(p.name for p in (root / "data" / "zero").iterdir())[0]


def _split_words(page, selector: str) -> list[str]:
    """The words of an element's text that the layout broke across lines (each word's boxes on more than one line)."""
    return page.evaluate("""(selector) => {
      const node = document.querySelector(selector).firstChild;
      if (!node) return [];
      const split = [];
      const re = /\\S+/g; let m;
      while ((m = re.exec(node.textContent)) !== null) {
        const range = document.createRange();
        range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
        const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
        if (tops.size > 1) split.push(m[0]);
      }
      return split;
    }""", selector)


def _classify_at_widths(server, image: Path, classes: int, shots: Path, name: str) -> list[str]:
    """Upload `image` at each width; returns the label shown. The bars are as many as the model has, up to 5, and
    no word of the label is broken."""
    labels = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for width in WIDTHS:
            page = browser.new_context(viewport={"width": width, "height": 800}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_function("document.querySelector('#model').textContent.includes('classes')")
            page.set_input_files("#file", str(image))
            page.wait_for_function("Number(document.body.dataset.predictions || 0) >= 1", timeout=20_000)
            assert page.locator("#error").is_hidden(), page.inner_text("#error")
            assert page.locator("#bars li").count() == min(5, classes)
            assert _split_words(page, "#label") == [], f"a word of the label broke across lines at {width} px"
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"the page is {overflow} px wider than a {width} px screen"
            page.screenshot(path=str(shots / f"web_page_{name}_{width}px.png"), full_page=True)
            labels.append(page.inner_text("#label"))
            assert not errors, errors
        browser.close()
    return labels


@pytest.fixture(autouse=True)
def _chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")


def test_a_two_class_model_answers_with_two_bars_at_both_widths(two_class_run, artifacts_dir):
    run_dir, zero = two_class_run
    with ServerProcess(run_dir, "--log-level", "warning") as server:
        labels = _classify_at_widths(server, zero, 2, artifacts_dir, "two_classes")
    assert set(labels) <= set(NAMES.values()) and len(set(labels)) == 1  # the same answer on both screens


def test_a_ten_class_model_shows_five_bars_at_both_widths(digits_run, artifacts_dir, tmp_path):
    from sklearn.datasets import load_digits

    image = tmp_path / "seven.png"
    Image.fromarray((load_digits().images[7] * 255 / 16).astype(np.uint8)).save(image)
    with ServerProcess(digits_run, "--log-level", "warning") as server:
        labels = _classify_at_widths(server, image, 10, artifacts_dir, "ten_classes")
    assert len(set(labels)) == 1
