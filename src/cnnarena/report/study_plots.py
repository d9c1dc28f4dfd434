"""Figures of a study: accuracy vs cost, the learning-rate comparison, data-fraction learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from ..figure_text import literal
from ..rundir import base_model
from .plots import _save, subplots

Colors = dict[str, str]


def model_colors(models: list[str]) -> Colors:
    """One colour per model, the same in every chart of the report (the table's order picks them)."""
    palette = matplotlib.colormaps["tab10"].colors
    return {m: matplotlib_hex(palette[i % len(palette)]) for i, m in enumerate(models)}


def matplotlib_hex(rgb) -> str:
    return "#" + "".join(f"{round(255 * v):02x}" for v in rgb[:3])


def _plain_count(x: float, _pos=None) -> str:
    """1,000 -> '1k', 2,500,000 -> '2.5M': log-axis labels a reader can read."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def _log_counts(ax, values: list[float]) -> None:
    """A log axis ticked at the values themselves (or at powers of ten when there are many), labelled plainly."""
    ax.set_xscale("log")
    ticks = sorted(set(values))
    if len(ticks) <= 6:
        ax.set_xticks(ticks)
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(_plain_count))


def _scatter(table: list[dict[str, Any]], x_key: str, x_label: str, path: Path, colors: Colors,
             log_x: bool = False) -> Path:
    fig, ax = subplots(figsize=(6, 4))
    for r in table:
        marker = "o" if r["family"] == "custom" else "s"
        ax.errorbar(r[x_key], 100 * r["accuracy"], yerr=100 * (r["accuracy_std"] or 0), fmt=marker, ms=8, capsize=3,
                    label=literal(r["model"]), color=colors.get(r["model"]))
        ax.annotate(literal(r["model"]), (r[x_key], 100 * r["accuracy"]), textcoords="offset points", xytext=(6, 6),
                    fontsize=9)
    if log_x:
        _log_counts(ax, [r[x_key] for r in table])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.set_xlim(left=0, right=1.15 * max(r[x_key] for r in table))
    _accuracy_axes(ax, x_label)
    ax.set_title("circles: custom CNNs, squares: pretrained", fontsize=9)
    return _save(fig, path)


def _accuracy_axes(ax, x_label: str) -> None:
    """Test accuracy in % (never drawn above 100.5), a grid, and the x label."""
    ax.set_ylim(top=min(ax.get_ylim()[1], 100.5))
    ax.set_xlabel(x_label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)


def accuracy_vs_time(table, path: Path, colors: Colors) -> Path:
    return _scatter(table, "train_seconds", "training time (s)", path, colors)


def accuracy_vs_params(table, path: Path, colors: Colors) -> Path:
    return _scatter(table, "params", "parameters", path, colors, log_x=True)


def lr_comparison(model: str, curves: dict[str, list[dict[str, Any]]], best: float, path: Path) -> Path:
    """Validation loss and accuracy per epoch, one line per learning rate."""
    fig, axes = subplots(1, 2, figsize=(10, 3.8))
    for lr, history in curves.items():
        epochs = [r["epoch"] for r in history]
        style = "-" if float(lr) == best else "--"
        label = f"lr {lr}" + (" (chosen)" if float(lr) == best else "")
        axes[0].plot(epochs, [r["val_loss"] for r in history], style, marker="o", ms=3, label=label)
        axes[1].plot(epochs, [100 * r["val_accuracy"] for r in history], style, marker="o", ms=3, label=label)
    for ax, label in zip(axes, ("validation loss", "validation accuracy (%)"), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(literal(f"learning-rate comparison: {model}"))
    return _save(fig, path)


def fraction_curves(curves: dict[str, dict[str, float]], sizes: dict[str, int], path: Path, colors: Colors) -> Path:
    fig, ax = subplots(figsize=(6, 4))
    for model, by_fraction in curves.items():
        fractions = sorted(by_fraction, key=float)
        ax.plot([sizes[f] for f in fractions], [100 * by_fraction[f] for f in fractions], "o-", label=literal(model),
                color=colors.get(model))
    _log_counts(ax, list(sizes.values()))
    ax.set_xlabel("training images")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("learning curves: accuracy vs training-set size")
    return _save(fig, path)


def anytime_curves(anytime: dict[str, Any], path: Path, colors: Colors) -> Path:
    """Validation accuracy against training wall-clock time, one line per model, its test accuracy at the end."""
    fig, ax = subplots(figsize=(7, 4.2))
    for model, points in anytime["curves"].items():
        t = [p[0] for p in points]
        line, = ax.plot(t, [100 * p[1] for p in points], "o-", ms=3, label=literal(f"{model} (validation)"),
                        color=colors.get(model))
        ax.plot([t[-1]], [100 * anytime["test_accuracy"][model]], "*", ms=12, color=line.get_color(),
                label=literal(f"{model} test: {100 * anytime['test_accuracy'][model]:.2f}%"))
    if anytime.get("budget_seconds"):
        ax.axvline(anytime["budget_seconds"], color="gray", ls="--", lw=1, label="budget per model")
    for c in anytime.get("crossings", []):
        for t in c["seconds"]:
            ax.axvline(t, color="red", ls=":", lw=1)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_locator(MaxNLocator(8))
    ax.set_xlabel("training wall-clock seconds (validation passes included)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("anytime curves: accuracy vs time on this machine")
    return _save(fig, path)


def resolution_tradeoff(table: list[dict[str, Any]], path: Path, colors: Colors) -> Path:
    """--input-sizes: test accuracy against the cost of one image (latency at batch 1), a line through each
    pretrained model's resolutions, the custom CNNs as points for reference."""
    fig, ax = subplots(figsize=(7, 4.2))
    by_base: dict[str, list[dict[str, Any]]] = {}
    for r in table:
        by_base.setdefault(base_model(r["model"]), []).append(r)
    for base, rows in by_base.items():
        rows = sorted(rows, key=lambda r: r.get("input_px") or 0)
        color = colors.get(rows[0]["model"])
        ax.plot([r["latency_ms"] for r in rows], [100 * r["accuracy"] for r in rows],
                "s-" if rows[0]["family"] == "pretrained" else "o", color=color, ms=7, label=literal(base))
        for r in rows:
            label = f"{r['input_px']} px" if r.get("input_px") else r["model"]
            ax.annotate(literal(label), (r["latency_ms"], 100 * r["accuracy"]), textcoords="offset points",
                        xytext=(6, 6), fontsize=9)
    ax.set_xlim(left=0)
    _accuracy_axes(ax, "latency: ms per image at batch 1 on this machine")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("input resolution: accuracy against cost, same training budget")
    return _save(fig, path)
