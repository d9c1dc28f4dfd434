"""The study's single self-contained HTML report (every image embedded, opens offline)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader

from .. import rundir
from ..files import atomic_write_text
from . import study_plots
from .comparison import ACCURACY_COLUMNS, COST_COLUMNS, fmt


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def write_report(comparison: dict[str, Any], out: Path) -> Path:
    from ..config import build_config
    from ..data.inspect import write_plots
    from ..data.sources import load_data  # the study's source is already decoded in this process

    out = Path(out)
    plots = out / "plots"
    table = comparison["table"]
    figures: dict[str, str] = {}
    colors = study_plots.model_colors([r["model"] for r in table])
    source = load_data(build_config(None, {"data": comparison["data"], **_data_options(comparison)}))
    for p in write_plots(source, plots):
        figures[p.stem] = _embed(p)
    figures["accuracy_vs_time"] = _embed(study_plots.accuracy_vs_time(table, plots / "accuracy_vs_time.png", colors))
    figures["accuracy_vs_params"] = _embed(study_plots.accuracy_vs_params(table, plots / "accuracy_vs_params.png",
                                                                          colors))
    if any(rundir.base_model(r["model"]) != r["model"] for r in table):
        figures["resolutions"] = _embed(study_plots.resolution_tradeoff(table, plots / "input_sizes.png", colors))
    lr_figures = {m: _embed(study_plots.lr_comparison(m, r["curves"], r["best_lr"],
                                                      plots / f"lr_{rundir.model_dir(m)}.png"))
                  for m, r in comparison["lr_comparison"].items()}
    fraction_figure = None
    if any(len(c) > 1 for c in comparison["fraction_curves"].values()):
        fraction_figure = _embed(study_plots.fraction_curves(comparison["fraction_curves"],
                                                             comparison["fraction_train_sizes"],
                                                             plots / "fraction_curves.png", colors))
    if comparison.get("anytime"):
        figures["anytime"] = _embed(study_plots.anytime_curves(comparison["anytime"], plots / "anytime.png",
                                                               colors))
    explained = comparison.get("explanations") or {}
    for key, name in (("where_png", "where"), ("disagreements_png", "disagreements")):
        if explained.get(key):
            figures[name] = _embed(Path(explained[key]))
    per_model = [_model_section(r, colors[r["model"]]) for r in table]
    path = out / rundir.REPORT
    atomic_write_text(path, render(comparison, figures, lr_figures, fraction_figure, per_model, colors))
    return path


def render(comparison: dict[str, Any], figures: dict[str, str], lr_figures: dict[str, str],
           fraction_figure: str | None, per_model: list[dict[str, Any]], colors: dict[str, str]) -> str:
    """report.html's text. Every template is escaped, whatever its name (select_autoescape() left study.html.j2
    raw: class names ran as markup)."""
    env = Environment(loader=PackageLoader("cnnarena.report", "templates"), autoescape=True)
    return env.get_template("study.html.j2").render(
        c=comparison, tables=[("comparison-table", "How well", ACCURACY_COLUMNS),
                              ("cost-table", "What it cost", COST_COLUMNS)],
        fmt=fmt, figures=figures, lr_figures=lr_figures, colors=colors,
        fraction_figure=fraction_figure, per_model=per_model, tradeoff_columns=_tradeoff_columns(comparison))


def _tradeoff_columns(comparison: dict[str, Any]) -> list[tuple[str, str]]:
    """Under an equal budget training times differ only by when runs stopped: no column compares them."""
    equal_budget = bool((comparison.get("anytime") or {}).get("budget_seconds"))
    columns = [("accuracy_gap_points", "points behind best")]
    if not equal_budget:
        columns.append(("train_time_x_fastest", "train time × fastest"))
    columns += [("params_x_smallest", "params × smallest"), ("latency_x_quickest", "latency × quickest")]
    if not equal_budget:
        columns.append(("pareto_optimal", "Pareto-optimal (accuracy vs time)"))
    return columns


def _model_section(row: dict[str, Any], color: str) -> dict[str, Any]:
    """A model's part of the report: its curves, confusion matrix, mistakes and per-class recall."""
    run_dir = Path(row["run_dir"])
    metrics = rundir.read_metrics(run_dir)
    return {"model": row["model"], "color": color, "curves": _embed(run_dir / "plots" / "curves.png"),
            "confusion": _confusion(metrics), "mistakes": _embed(run_dir / "plots" / "top_mistakes.png"),
            "recall": {c: v["recall"] for c, v in metrics.get("per_class", {}).items()}}


def _confusion(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test confusion matrix as the report's HTML table: each cell's share of its true class (its shade),
    its count on hover."""
    counts = metrics.get("confusion_matrix") or []
    classes = list(metrics.get("per_class", {})) or [str(i) for i in range(len(counts))]
    rows = []
    for name, row in zip(classes, counts, strict=False):
        total = max(sum(row), 1)
        rows.append({"name": name, "cells": [{"count": n, "share": n / total} for n in row]})
    return {"classes": classes, "rows": rows}


def _data_options(comparison: dict[str, Any]) -> dict[str, Any]:
    keys = ("data_dir", "image_size", "grayscale", "class_map", "strict", "curation")
    return {k: v for k, v in comparison.get("data_options", {}).items() if k in keys}
