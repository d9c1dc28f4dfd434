"""`cnnarena tune`'s report: the search's history, the parameters' importance, and the trials as a table."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from ..files import atomic_write_text


def _history(study, path: Path) -> Path:
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.PRUNED]
    ax.scatter([t.number for t in done], [t.value for t in done], label="complete", color="#2563eb", zorder=3)
    ax.scatter([t.number for t in pruned], [max(t.intermediate_values.values(), default=0) for t in pruned],
               label="pruned (last reported)", color="#9aa5b1", marker="x", zorder=3)
    best, xs, ys = float("-inf"), [], []
    for t in sorted(done, key=lambda t: t.number):
        best = max(best, t.value)
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="#b91c1c", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.set_layout_engine(None)  # else savefig draws the figure once more for the placeholder engine left
    fig.savefig(path, dpi=100)
    return path


def _importance(study, path: Path) -> tuple[Path | None, dict[str, float]]:
    import optuna
    from matplotlib.figure import Figure

    try:
        importance = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # fewer than two complete trials, or a single parameter value
        return None, {}
    fig = Figure(figsize=(6, 0.45 * max(3, len(importance)) + 0.8))
    ax = fig.subplots()
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names], color="#2563eb")
    ax.set_xlabel("importance (fANOVA)")
    fig.tight_layout()
    fig.set_layout_engine(None)  # else savefig draws the figure once more for the placeholder engine left
    fig.savefig(path, dpi=100)
    return path, {k: round(v, 4) for k, v in importance.items()}


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def write_tune_report(study, summary: dict[str, Any], out: Path) -> Path:
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    history = _history(study, plots / "tune_history.png")
    importance_png, importance = _importance(study, plots / "tune_importance.png")
    summary["importance"] = importance
    esc = html.escape
    def cells(r: dict[str, Any]) -> str:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        return (f"<tr><td>{r['number']}</td><td>{r['state']}</td><td>{value}</td><td>{r['epochs_reported']}</td>"
                f"<td>{esc(params)}</td></tr>")

    rows = "".join(cells(r) for r in summary["rows"])
    best_params = ", ".join(f"{k}={v}" for k, v in summary["best_params"].items())
    counts = ", ".join(f"{n} {k}" for k, n in summary["trials"].items() if n)
    imp = f'<img id="importance" alt="parameter importance" src="{_embed(importance_png)}">' if importance_png \
        else "<p>Parameter importance needs two complete trials or more.</p>"
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>cnnarena tune · {esc(study.study_name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:2rem auto;padding:0 1rem;color:#1d2330}}
table{{border-collapse:collapse}}td,th{{border:1px solid #dde1ea;padding:.25rem .5rem;font-size:.9rem}}
img{{max-width:100%}}</style></head><body>
<h1>Hyper-parameter search: {esc(study.study_name)}</h1>
<p>Best: trial {summary['best_trial']}, validation accuracy {summary['best_value']:.4f}
(test accuracy {summary['best_test_accuracy']:.4f}), run directory <code>{esc(str(summary['best_run_dir']))}</code>
(a normal run: <code>cnnarena evaluate / export / serve</code> it). Parameters:
<code>{esc(best_params)}</code>.</p>
<p>Trials: {esc(counts)}.</p>
<h2 id="history">Search history</h2><img id="history-chart" alt="search history" src="{_embed(history)}">
<h2 id="importance-section">Parameter importance</h2>{imp}
<h2>Trials</h2><table id="trials"><tr><th>trial</th><th>state</th><th>validation accuracy</th><th>epochs</th>
<th>parameters</th></tr>{rows}</table></body></html>"""
    path = out / "tune_report.html"
    atomic_write_text(path, page)
    return path
