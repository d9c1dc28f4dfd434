"""The study: statistics against hand-computed values, a tiny real study, resume, and the HTML report
opened in real headless Chromium."""

import collections
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from browser import CHROMIUM, launch
from cli_run import run_cli

from cnnarena.study.config import build_study_config
from cnnarena.study.runner import run_study
from cnnarena.study.stats import fraction_winners, mcnemar_exact, mean_std, tradeoffs, verdict


def test_mcnemar_matches_hand_computation():
    # 10 images: A right & B wrong on 6, A wrong & B right on 1, both right on 3.
    a = np.array([1, 1, 1, 1, 1, 1, 0, 1, 1, 1], bool)
    b = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1], bool)
    result = mcnemar_exact(a, b)
    assert (result["a_right_b_wrong"], result["a_wrong_b_right"]) == (6, 1)
    # Exact: p = 2 * P(X <= 1 | n=7, 1/2) = 2 * (1 + 7) / 128 = 0.125
    assert result["p_value"] == pytest.approx(0.125)
    # Symmetric, and 1.0 when there are no discordant pairs.
    assert mcnemar_exact(b, a)["p_value"] == pytest.approx(0.125)
    assert mcnemar_exact(a, a)["p_value"] == 1.0
    # b=10, c=0: p = 2 / 1024
    assert mcnemar_exact(np.ones(10, bool), np.zeros(10, bool))["p_value"] == pytest.approx(2 / 1024)


def test_mean_std_over_seeds():
    assert mean_std([0.9, 0.92, 0.94]) == pytest.approx((0.92, 0.02))
    assert mean_std([0.5]) == (0.5, 0.0)


def test_tradeoffs_follow_the_measured_numbers():
    rows = [
        {"model": "big", "accuracy": 0.95, "train_seconds": 400.0, "params": 4_000_000, "latency_ms": 8.0},
        {"model": "small", "accuracy": 0.92, "train_seconds": 100.0, "params": 100_000, "latency_ms": 1.0},
        {"model": "bad", "accuracy": 0.90, "train_seconds": 200.0, "params": 200_000, "latency_ms": 2.0},
    ]
    t = {r["model"]: r for r in tradeoffs(rows)}
    assert t["small"]["accuracy_gap_points"] == 3.0
    assert t["big"]["train_time_x_fastest"] == 4.0
    assert t["big"]["params_x_smallest"] == 40.0
    assert t["bad"]["latency_x_quickest"] == 2.0
    assert "accuracy_points_per_minute" not in t["small"]  # a ratio that rewards stopping early: gone
    assert t["big"]["pareto_optimal"] and t["small"]["pareto_optimal"]
    assert not t["bad"]["pareto_optimal"] and t["bad"]["dominated_by"] == ["small"]


def test_the_verdict_ranks_by_macro_f1_when_the_classes_are_imbalanced():
    rows = [
        {"model": "accurate", "accuracy": 0.95, "macro_f1": 0.70, "train_seconds": 100.0, "params": 10,
         "latency_ms": 1.0},
        {"model": "fair", "accuracy": 0.93, "macro_f1": 0.85, "train_seconds": 100.0, "params": 20, "latency_ms": 2.0},
    ]
    assert verdict(rows, None, imbalance_ratio=2.0)[0].startswith("Most accurate: accurate at 95.00%")
    lines = verdict(rows, None, imbalance_ratio=10.0)
    assert "ranked by macro-F1" in lines[0] and "10.0x" in lines[0]
    assert lines[1].startswith("Best macro-F1: fair at 85.00%") and "It beats accurate by 15.00 points" in lines[2]


def test_fraction_winners():
    curves = {"custom": {0.1: 0.80, 1.0: 0.95}, "pretrained": {0.1: 0.85, 1.0: 0.93}}
    winners = fraction_winners(curves)
    assert [(w["fraction"], w["winner"], w["margin_points"]) for w in winners] == [
        (0.1, "pretrained", 5.0), (1.0, "custom", 2.0)]


TINY_STUDY = {"data": "digits", "models": ["simple-2conv", {"simple-3conv-5x5": {"lr": 2e-3}}], "seeds": 2,
              "fractions": [0.2, 1.0], "lrs": [1e-3, 1e-2], "lr_epochs": 1, "epochs": 1, "batch_size": 64,
              "measure_seconds": 0.2}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    cfg = build_study_config({}, {**TINY_STUDY, "out": str(out)})
    comparison = run_study(cfg)
    return out, comparison


@pytest.mark.slow  # trains the tiny study's 10 runs
def test_tiny_study_writes_every_output(tiny_study):
    out, comparison = tiny_study
    for name in ("comparison.md", "comparison.csv", "comparison.json", "report.html", "split.json", "study.yaml"):
        assert (out / name).stat().st_size > 0, name
    table = comparison["table"]
    assert {r["model"] for r in table} == {"simple-2conv", "simple-3conv-5x5"}
    # Table values are the mean of the runs' own metrics.json files.
    for row in table:
        runs = out / "runs" / row["model"]
        accs = [json.loads((runs / f"f=1-s={s}" / "metrics.json").read_text())["test_accuracy"] for s in range(2)]
        assert row["accuracy"] == pytest.approx(sum(accs) / 2)
        assert row["latency_ms"] > 0 and row["throughput"] > 0 and row["train_memory_mb"] > 0
    # Every run saw the same test images.
    tests = {json.loads((p / "split.json").read_text())["test"].__len__() for p in (out / "runs").glob("*/*")}
    assert tests == {360}
    # The LR comparison chose one of the given values and the final runs used it.
    best = comparison["lr_comparison"]["simple-2conv"]["best_lr"]
    assert best in (1e-3, 1e-2)
    run_cfg = (out / "runs" / "simple-2conv" / "f=1-s=0" / "config.yaml").read_text()
    assert f"lr: {best}" in run_cfg
    # The trade-offs table is computed from the comparison table's numbers.
    fastest = min(r["train_seconds"] for r in table)
    for t, r in zip(comparison["tradeoffs"], table, strict=True):
        assert t["train_time_x_fastest"] == pytest.approx(r["train_seconds"] / fastest, abs=0.01)
    assert comparison["mcnemar"]["n"] == 360
    assert len(comparison["fraction_winners"]) == 2
    # "What each model confuses": the pairs are the runs' own mistakes, counted from predictions.csv
    x = comparison["explanations"]
    for row in table:
        with open(Path(row["run_dir"]) / "predictions.csv") as f:
            wrong = collections.Counter((r["true"], r["predicted"]) for r in csv.DictReader(f) if r["correct"] == "0")
        pairs = x["confusions"][row["model"]]
        ranked = sorted(wrong.items(), key=lambda kv: (-kv[1], int(kv[0][0]), int(kv[0][1])))  # digits: name = index
        assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [(t, q, n) for (t, q), n in ranked[:5]]
        assert all(0 < p["share"] <= 1 for p in pairs)
        assert x["layers"][row["model"]].startswith("net.")
    # "Where each model looks": 10 classes -> one example each, plus up to 3 confident mistakes per model
    assert 10 <= x["where_count"] <= 16 and Path(x["where_png"]).stat().st_size > 10_000
    assert 0 <= x["disagreements_shown"] <= min(8, x["disagreements"]) and x["test_images"] == 360


@pytest.mark.slow  # reruns the tiny study
def test_rerunning_a_study_skips_finished_runs_and_refuses_other_settings(tiny_study, tmp_path, monkeypatch, capsys):
    out, _ = tiny_study
    stamp = (out / "runs" / "simple-2conv" / "f=1-s=0" / "metrics.json").stat().st_mtime_ns
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(TINY_STUDY))
    command = ["study", "--config", str(config), "--out", str(out)]
    first = json.loads((out / "comparison.json").read_text())
    code, _, err = run_cli(command, monkeypatch, capsys)
    assert code == 0, err
    assert "fraction 1 seed 0: done" in err
    assert (out / "runs" / "simple-2conv" / "f=1-s=0" / "metrics.json").stat().st_mtime_ns == stamp
    # the report's time is what the runs took, whichever invocation trained them
    again = json.loads((out / "comparison.json").read_text())
    assert again["runs_seconds"] == first["runs_seconds"] > 0
    assert "the runs took" in (out / "report.html").read_text()
    # the same study with more epochs is another experiment: its finished runs are not passed off as it
    config.write_text(yaml.safe_dump({**TINY_STUDY, "epochs": 3}))
    code, _, err = run_cli(command, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: {out / 'runs' / 'simple-2conv'}")
    assert "holds a run with other settings (train.epochs 1 -> 3)" in err
    assert (out / "runs" / "simple-2conv" / "f=1-s=0" / "metrics.json").stat().st_mtime_ns == stamp


@pytest.mark.slow  # a browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it with apt)")
def test_report_renders_in_headless_chromium(tiny_study, artifacts_dir):
    from playwright.sync_api import sync_playwright

    out, comparison = tiny_study
    shots = Path(artifacts_dir)  # conftest.py: pytest's tmp dir, not the working tree
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((out / "report.html").resolve().as_uri())
        rows = page.locator("#comparison-table tr")
        assert rows.count() == 1 + len(comparison["table"])
        assert page.locator("#tradeoffs-table tr").count() == 1 + len(comparison["table"])
        assert page.locator("#fraction-table tr").count() == 3
        images = page.locator("img")
        assert images.count() >= 10
        for grid in ("#where-grid", *(["#disagreements-grid"] if comparison["explanations"]["disagreements"] else [])):
            box = page.locator(grid).bounding_box()  # the heat-map grids are drawn, at a readable size
            assert box and box["width"] > 300 and box["height"] > 300, (grid, box)
        assert page.locator("table.confusions").count() == len(comparison["table"])
        page.locator("#where-models-look").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "study_report_heat_maps.png"))
        for i in range(images.count()):
            size = images.nth(i).evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
            assert size[0] and size[1] > 0 and size[2] > 0, images.nth(i).get_attribute("alt")
        html = page.content()
        assert "http://" not in html and "https://" not in html  # self-contained: opens offline
        page.screenshot(path=str(shots / "study_report.png"), full_page=True)
        browser.close()
    assert (shots / "study_report.png").stat().st_size > 50_000
