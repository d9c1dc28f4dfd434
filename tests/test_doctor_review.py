"""`cnnarena doctor --review` end to end: the real command serves the page on loopback, headless Chromium marks
findings and saves curation.yaml, and `train --curation` / `study --compare-curation` apply it. The user's folder
is hashed before and after: nothing in it may change."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from browser import launch
from PIL import Image

import cnnarena
from cnnarena.data.curation import apply_curation, read_curation
from cnnarena.data.sources import load_source
from cnnarena.errors import UserError
from cnnarena.serve.launch import free_port

playwright = pytest.importorskip("playwright.sync_api")

HOSTILE_CLASS = "two <img src=x onerror=window.ran=1>"  # a folder name that is markup: the page shows it as text


def _folder_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
            h.update(str(path.stat().st_mtime_ns).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Real digits 0, 1 and 2 as 32 px PNGs (40 each), one 0 copied into the 2s (an exact copy filed under two
    classes) and one more 1 filed under the 0s (a flipped label)."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("review") / "photos"
    digits = load_digits()
    for label, name in ((0, "zero"), (1, "one"), (2, HOSTILE_CLASS)):
        (root / name).mkdir(parents=True)
        for k in np.flatnonzero(digits.target == label)[:40]:
            image = Image.fromarray((digits.images[k] * 255 / 16).astype(np.uint8)).resize((32, 32))
            image.save(root / name / f"{k:04d}.png")
    first_zero = sorted((root / "zero").iterdir())[0]
    (root / HOSTILE_CLASS / "copy-of-a-zero.png").write_bytes(first_zero.read_bytes())
    one = np.flatnonzero(digits.target == 1)[50]
    Image.fromarray((digits.images[one] * 255 / 16).astype(np.uint8)).resize((32, 32)).save(
        root / "zero" / "flipped-one.png")
    return root


COPY, FLIPPED = f"{HOSTILE_CLASS}/copy-of-a-zero.png", "zero/flipped-one.png"


def _start_review(folder: Path, out: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnarena", "doctor", str(folder), "--out", str(out),
                             "--review", "--review-port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"doctor --review exited {proc.returncode}: {proc.stdout.read().decode()}")
        try:
            if httpx.get(url + "/api/findings", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("the review page did not answer within 180 s")


def _mark_and_save(url: str, shots: Path) -> str:
    """In Chromium: exclude the copy, relabel the flipped 1 from its label-issue card, keep the original 0; save;
    reload and read the decisions back. Returns the original 0's id."""
    with playwright.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_selector(".finding.duplicate")
        pair = page.locator(".finding.duplicate").first
        assert pair.locator("img").count() == 2
        assert "two classes" in pair.locator("h3").inner_text()
        assert f"{COPY} · {HOSTILE_CLASS}" in pair.inner_text(), "a class name was not shown as text"
        assert page.locator('.finding img[src="x"]').count() == 0 and page.evaluate("window.ran") is None, \
            "a class name ran as markup"
        page.select_option(f'select[data-id="{COPY}"] >> nth=0', "exclude")
        zero = next(i for i in page.eval_on_selector_all("select[data-id]", "s => s.map(x => x.dataset.id)")
                    if i.startswith("zero/") and i != FLIPPED)
        page.select_option(f'select[data-id="{zero}"] >> nth=0', "keep")
        flipped = page.locator(f'.finding.label select[data-id="{FLIPPED}"]')
        assert "relabel to one (likely)" in flipped.inner_text()
        flipped.select_option("relabel:one")
        page.click("#save")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('saved')")
        page.screenshot(path=str(shots / "doctor-review.png"), full_page=True)
        page.reload()
        page.wait_for_selector(".finding.duplicate")
        assert page.eval_on_selector(f'select[data-id="{COPY}"]', "s => s.value") == "exclude", \
            "the page did not start from the saved curation"
        assert page.eval_on_selector(f'select[data-id="{FLIPPED}"]', "s => s.value") == "relabel:one"
        assert not errors, errors
        browser.close()
    return zero


@pytest.mark.slow  # the doctor in a child process, a browser, then two trainings
def test_review_page_writes_curation_and_training_applies_it(folder, tmp_path, artifacts_dir):
    before = _folder_hash(folder)
    out = tmp_path / "doctor"
    proc, url = _start_review(folder, out)
    try:
        zero = _mark_and_save(url, artifacts_dir)
        # what the page does not offer is refused by the server, in one line
        bad = httpx.post(url + "/api/curation", json={"exclude": ["../../etc/passwd"]})
        assert bad.status_code == 400 and "not in this data" in bad.json()["detail"]
        assert httpx.post(url + "/api/curation", json={"relabel": {FLIPPED: "cat"}}).status_code == 400
        json_type = {"Content-Type": "application/json"}
        assert httpx.post(url + "/api/curation", content=b"{not json", headers=json_type).status_code == 400
        assert httpx.get(url + "/api/image/99999").status_code == 404
        # another site in the user's browser: a form post, a page of another origin, a rebound host name
        assert httpx.post(url + "/api/curation", content=b'{"exclude": []}',
                          headers={"Content-Type": "text/plain"}).status_code == 415
        assert httpx.post(url + "/api/curation", json={"exclude": []},
                          headers={"Origin": "https://evil.example"}).status_code == 403
        assert httpx.get(url + "/api/findings", headers={"Host": "evil.example"}).status_code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    curation_file = out / "curation.yaml"
    saved = yaml.safe_load(curation_file.read_text())
    assert saved == {"dataset": str(folder), "exclude": [COPY], "relabel": {FLIPPED: "one"}, "keep": [zero]}

    run = cnnarena.train(folder, model="simple-2conv", epochs=1, out=tmp_path / "run", curation=curation_file)
    assert run.metrics["curation"]["excluded"] == 1 and run.metrics["curation"]["relabelled"] == 1
    split = json.loads((run.path / "split.json").read_text())
    ids = split["train"] + split["val"] + split["test"]
    assert COPY not in ids and len(ids) == 121
    assert split["curation"]["sha256"] == hashlib.sha256(curation_file.read_bytes()).hexdigest()
    assert _folder_hash(folder) == before, "the user's folder changed"
    # the run holds to the curation it trained with: the file changed, its test split is refused in one line
    curation_file.write_text(yaml.safe_dump({**saved, "keep": []}))
    with pytest.raises(UserError, match="was made with the curation"):
        run.evaluate()


def test_a_curation_applies_in_memory_and_refuses_what_does_not_fit(folder, tmp_path):
    source = load_source(str(folder), cache_dir=tmp_path / "cache")
    two = next(i for i in source.pool.ids if i.startswith(HOSTILE_CLASS) and i != COPY)
    good = tmp_path / "curation.yaml"
    good.write_text(yaml.safe_dump({"exclude": [COPY], "relabel": {two: "zero"}}))
    curated = apply_curation(source, read_curation(good))
    assert len(curated.pool) == len(source.pool) - 1
    assert curated.classes[int(curated.pool.labels[curated.pool.ids.index(two)])] == "zero"
    assert COPY in curated.excluded
    for body, says in (({"exclude": ["nope.png"]}, "not in this data"), ({"relabel": {two: "cat"}}, "not a class"),
                       ({"exclude": [two], "relabel": {two: "zero"}}, "both excluded and relabelled"),
                       ({"exclude": [two], "keep": [two]}, "both kept and excluded"),
                       ({"exclude": "one.png"}, "must be a list"), ({"surprise": 1}, "must be a mapping")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(body))
        with pytest.raises(UserError, match=says):
            apply_curation(source, read_curation(bad))
    with pytest.raises(UserError, match="no such file"):
        cnnarena.train(folder, model="simple-2conv", epochs=1, out=tmp_path / "never", curation=tmp_path / "no.yaml")
    assert not (tmp_path / "never").exists()


@pytest.mark.slow  # a study of one model, twice
def test_compare_curation_trains_as_given_and_as_curated_on_one_split(folder, tmp_path):
    source = load_source(str(folder), cache_dir=tmp_path / "cache")
    twos = [i for i in source.pool.ids if i.startswith(HOSTILE_CLASS) and i != COPY][:3]
    curation_file = tmp_path / "curation.yaml"
    curation_file.write_text(yaml.safe_dump({"exclude": [COPY],
                                             "relabel": {i: "one" for i in twos}}))
    study = cnnarena.study(folder, models=["simple-2conv"], epochs=2, out=tmp_path / "study",
                           curation=curation_file, compare_curation=True)
    given = json.loads((study.path / "as-given" / "split.json").read_text())
    curated = json.loads((study.path / "split.json").read_text())
    assert given == curated, "both sides must train on one split"
    comparison = json.loads((study.path / "comparison.json").read_text())
    (row,) = comparison["curation_comparison"]["rows"]
    assert row["model"] == "simple-2conv" and row["test_images"] == len([i for i in curated["test"]
                                                                         if i != COPY])
    assert 0 <= row["as_given"] <= 1 and 0 <= row["curated"] <= 1
    assert comparison["curation"]["excluded"] == 1 and comparison["curation"]["relabelled"] == 3
    html = (study.path / "report.html").read_text()
    assert "What the curation changed" in html and "1\nimage(s) left out, 3 relabelled" in html
    assert (study.path / "as-given" / "report.html").is_file()


def test_review_in_a_notebook_serves_in_the_background_and_stops(folder, tmp_path):
    """`report.review()` returns at once with the page running on loopback in this process (as a notebook cell
    needs); Save writes curation.yaml beside the report; after stop() nothing answers on its port."""
    report = cnnarena.doctor(folder, out=tmp_path / "report")
    page = report.review()
    try:
        assert page.running and page.url.startswith("http://127.0.0.1:")
        shown = page._repr_html_()
        assert f'<iframe src="{page.url}"' in shown and "curation.yaml" in shown
        cards = httpx.get(page.url + "api/findings", timeout=10).json()["cards"]
        assert any(card["kind"] == "duplicate" for card in cards)
        saved = httpx.post(page.url + "api/curation", json={"exclude": [COPY], "relabel": {FLIPPED: "one"}},
                           timeout=10)
        assert saved.status_code == 200, saved.text
        assert read_curation(tmp_path / "report" / "curation.yaml").exclude == {COPY}
        assert httpx.get(page.url, headers={"Host": "evil.example"}, timeout=10).status_code == 400
        again = report.review()  # a second page replaces the first: servers do not pile up
        assert again.running and not page.running
    finally:
        report.review().stop()
    assert not page.running and not again.running and "stopped" in page._repr_html_()
    for stopped in (page, again):
        with pytest.raises(httpx.ConnectError):
            httpx.get(stopped.url + "api/findings", timeout=2)
    with pytest.raises(UserError, match="no images"):
        cnnarena.DataReport(report.report, tmp_path / "report").review()
