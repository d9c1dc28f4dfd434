"""The comparison table of a study: its columns, how each value is shown, and the .json/.csv/.md files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .. import rundir
from ..files import atomic_write_text

COLUMNS = [("model", "model"), ("accuracy", "test acc"), ("accuracy_std", "± std"),
           ("balanced_accuracy", "balanced acc"), ("macro_precision", "precision"),
           ("macro_recall", "recall"), ("macro_f1", "macro F1"), ("weighted_f1", "weighted F1"),
           ("test_loss", "test loss"), ("params", "params"), ("params_trainable", "trainable"),
           ("model_file_mb", "file MB"), ("train_seconds", "train s"), ("seconds_per_epoch", "s/epoch"),
           ("epochs", "epochs"), ("latency_ms", "latency ms (b1)"), ("throughput", "img/s (b64)"),
           ("train_memory_mb", "train MB")]


def fmt(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        percent = key in ("accuracy", "accuracy_std", "balanced_accuracy")
        if percent or "precision" in key or "recall" in key or "f1" in key:
            return f"{100 * value:.2f}"
        return f"{value:,.1f}" if value >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_comparison(comparison: dict[str, Any], out: Path) -> None:
    table = comparison["table"]
    atomic_write_text(out / rundir.COMPARISON, json.dumps(comparison, indent=1, default=str))
    with open(out / rundir.COMPARISON_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k, _ in COLUMNS] + ["family", "seeds"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    lines = [f"# cnnarena study on {comparison['data']}", "",
             "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(k, r[k]) for k, _ in COLUMNS) + " |" for r in table]
    lines += ["", "Accuracy, precision, recall and F1 in %, macro averages unless marked.", "", "## Verdict", ""]
    lines += [f"- {s}" for s in comparison["verdict"]]
    atomic_write_text(out / rundir.COMPARISON_MD, "\n".join(lines) + "\n")


