"""Anytime curves (accuracy against time) and the default study at an equal budget, down to its report in Chromium."""

import json
from pathlib import Path

import pytest
from browser import CHROMIUM, launch

from cnnarena.study import anytime
from cnnarena.study.config import build_study_config, run_budget
from cnnarena.study.defaults import DEFAULT_STUDY
from cnnarena.study.runner import run_study


def _rows(*pairs):
    return [{"epoch_seconds": s, "val_seconds": 0.0, "val_accuracy": a} for s, a in pairs]


def test_curves_crossings_and_the_verdict_at_the_budget():
    slow_starter = _rows((10, 0.50), (10, 0.80), (10, 0.95))  # 10 s, 20 s, 30 s
    quick = _rows((5, 0.70), (5, 0.75), (5, 0.78), (5, 0.79), (5, 0.80), (5, 0.80))  # 5 s ... 30 s: a plateau
    assert anytime.curve(slow_starter) == [(10, 0.5), (20, 0.8), (30, 0.95)]
    # quick leads until 20 s, where the slow starter takes over for good
    assert anytime.crossings(anytime.curve(quick), anytime.curve(slow_starter)) == [20]
    summary = anytime.summarise({"quick": {"history": quick, "test_accuracy": 0.79},
                                 "slow": {"history": slow_starter, "test_accuracy": 0.94}}, 30.0)
    assert summary["still_improving"] == ["slow"]  # +15 points in its last epoch; quick none
    assert summary["crossings"] == [{"a": "quick", "b": "slow", "seconds": [20]}]
    lines = anytime.verdict_lines(summary, "cpu")
    assert lines[0] == "At 30 s each on this machine (cpu): slow 94.00% (30 s), quick 79.00% (30 s) test accuracy."
    assert "Still improving when stopped: slow" in lines[2]
    assert lines[3].startswith("The curves of quick and slow cross at 20 s")


def test_a_study_budget_is_shared_by_models_and_seeds():
    cfg = build_study_config({}, {"data": "digits", "models": ["simple-2conv", "fast"], "seeds": 2, "budget": "2m"})
    assert run_budget(cfg) == "30.0s"
    cfg = build_study_config({}, {"data": "digits", "models": ["simple-2conv", "fast"], "budget_per_model": "90s"})
    assert run_budget(cfg) == "90.0s"


@pytest.fixture(scope="module")
def default_study_on_digits(tmp_path_factory):
    """The default study (its models, fractions and budgeted runs) on digits, with a small budget."""
    out = tmp_path_factory.mktemp("default") / "s"
    # measure_seconds: each model's latency and throughput are measured (no assertion reads their values); 0.05 s
    # still takes at least 3 forward passes per measurement
    values = {**DEFAULT_STUDY, "data": "digits", "budget_per_model": "5s", "lrs": [1e-3], "lr_epochs": 1,
              "measure_seconds": 0.05, "out": str(out)}
    return out, run_study(build_study_config(values, {}))


@pytest.mark.slow  # 9 trainings, 3 of them budgeted
@pytest.mark.alone  # the study's budget buys as many epochs as the free cores allow
def test_the_default_study_compares_at_equal_time_and_over_data_fractions(default_study_on_digits):
    out, comparison = default_study_on_digits
    assert [r["model"] for r in sorted(comparison["table"], key=lambda r: r["model"])] == [
        "efficientnet_lite0", "fast", "simple-2conv"]
    for model in ("simple-2conv", "fast", "efficientnet_lite0"):
        metrics = json.loads((out / "runs" / model / "f=1-s=0" / "metrics.json").read_text())
        assert metrics["budget_seconds"] == 5.0 and "time budget of 5.0s" in metrics["stop_reason"]
        history = anytime.read_history(out / "runs" / model / "f=1-s=0")
        assert sum(r["epoch_seconds"] + r.get("val_seconds", 0) for r in history) <= 5 * 1.15 + 1
        assert (out / "runs" / model / "f=0.01-s=0" / "metrics.json").exists()
    assert set(comparison["anytime"]["curves"]) == {"simple-2conv", "fast", "efficientnet_lite0"}
    assert any(line.startswith("At 5 s each on this machine") for line in comparison["verdict"])
    assert [w["fraction"] for w in comparison["fraction_winners"]] == [0.01, 0.1, 1.0]


@pytest.mark.slow  # a browser
@pytest.mark.alone  # shares the budgeted study above
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it with apt)")
def test_the_default_study_report_shows_the_anytime_chart_and_fraction_curves(default_study_on_digits,
                                                                              artifacts_dir):
    from playwright.sync_api import sync_playwright

    out, _ = default_study_on_digits
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((out / "report.html").resolve().as_uri())
        for selector in ("#anytime-chart", "img[alt='accuracy vs training-set size']"):
            box = page.locator(selector).bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100, selector
            natural = page.locator(selector).evaluate("img => img.naturalWidth")
            assert natural > 0, selector
        assert page.locator("#fraction-table tr").count() == 4
        assert "At 5 s each on this machine" in page.locator("#verdict + ul").inner_text()
        page.locator("#anytime").scroll_into_view_if_needed()
        page.screenshot(path=str(Path(artifacts_dir) / "default_study_report.png"), full_page=True)
        browser.close()
    assert (Path(artifacts_dir) / "default_study_report.png").stat().st_size > 50_000


def _colour_in(png: Path, hex_colour: str) -> bool:
    """Whether any pixel of the PNG is this colour (within rounding)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    want = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(rgb - want).sum(1) <= 6).any())


@pytest.mark.slow  # a browser
@pytest.mark.alone  # shares the budgeted study above
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it with apt)")
def test_the_report_opens_with_the_answer_and_reads_on_a_laptop_and_a_phone(default_study_on_digits, artifacts_dir):
    from playwright.sync_api import sync_playwright

    from cnnarena.report.study_plots import model_colors

    out, comparison = default_study_on_digits
    colors = model_colors([r["model"] for r in comparison["table"]])
    for model, colour in colors.items():  # one colour per model in every chart
        for chart in ("accuracy_vs_time", "anytime", "fraction_curves"):
            assert _colour_in(out / "plots" / f"{chart}.png", colour), (model, chart)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto((out / "report.html").resolve().as_uri())
        assert page.locator("h2").first.get_attribute("id") is None and page.locator("h2").first.inner_text() == \
            "The answer"
        answer = page.locator("#answer .answer").inner_text()
        assert answer.split(":")[0] in ("Training from scratch won", "Fine-tuning a pretrained network won",
                                        "No clear winner", "A tie")
        assert "Each model had 5.0 s of training" in answer and "Cost:" in answer
        winner = comparison["table"][0]["run_dir"]
        assert f"cnnarena serve {winner}" in page.locator("#next-steps + p + ul").inner_text()
        assert page.locator(".method").count() == 3 and "Optimizer" in page.locator(".method").first.inner_text()
        findings = page.locator("#verdict + ul").inner_text()
        assert "as long" not in findings and "Fastest to train" not in findings
        assert "per training minute" not in page.locator("#tradeoffs-table").inner_text()
        for table in ("#comparison-table", "#cost-table"):  # each table fits a laptop's width, nothing scrolled
            assert page.locator(table).evaluate("t => t.scrollWidth <= t.clientWidth + 1"), table
        swatch = page.locator("#comparison-table tr.best .swatch").evaluate("s => getComputedStyle(s).backgroundColor")
        r, g, b = (int(v) for v in swatch[swatch.index("(") + 1:-1].split(",")[:3])
        assert f"#{r:02x}{g:02x}{b:02x}" == colors[comparison["table"][0]["model"]]
        cells = page.locator("table.confusion td")
        assert cells.count() == 3 * 10 * 10 and "image(s)" in cells.first.get_attribute("title")  # counts on hover
        sizes = cells.evaluate_all("cs => cs.map(c => parseFloat(getComputedStyle(c).fontSize))")
        assert min(sizes) >= 12  # 9 pt
        page.screenshot(path=str(Path(artifacts_dir) / "study_report_top_1366.png"))
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than a phone
        page.screenshot(path=str(Path(artifacts_dir) / "study_report_top_390.png"))
        browser.close()
