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
# the table split in two so that each fits a laptop's screen: how well each model does, and what it costs
ACCURACY_COLUMNS = COLUMNS[:9]
COST_COLUMNS = COLUMNS[:1] + [c for c in COLUMNS[9:] if c[0] != "params_trainable"] + [("input_px", "input px")]


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
    lines = [f"# cnnarena study on {comparison['data']}", "", "## The answer", "", comparison.get("answer", ""), "",
             "## Comparison", "", *tables_md(table), "## Findings", ""]
    lines += [f"- {s}" for s in comparison["verdict"]]
    lines += ["", "## Methods", ""] + [f"**{m}.** {text}\n" for m, text in comparison.get("methods", {}).items()]
    lines += ["## Next steps", "", *next_steps_md(comparison)]
    atomic_write_text(out / rundir.COMPARISON_MD, "\n".join(lines) + "\n")


def tables_md(table: list[dict[str, Any]]) -> list[str]:
    """The two comparison tables (accuracy, cost) in Markdown."""
    lines = []
    for columns in (ACCURACY_COLUMNS, COST_COLUMNS):
        lines += ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(fmt(k, r.get(k)) for k, _ in columns) + " |" for r in table]
        lines.append("")
    return lines + ["Accuracy, precision, recall and F1 in %, macro averages unless marked.", ""]


def next_steps_md(comparison: dict[str, Any]) -> list[str]:
    steps = comparison.get("next_steps") or []
    if not steps:
        return []
    return [f"The winner's run: `{comparison['table'][0]['run_dir']}`", ""] + [f"- {what}: `{cmd}`"
                                                                              for what, cmd in steps]


def terminal_summary(comparison: dict[str, Any]) -> str:
    """What `cnnarena study` prints last: the tables, the answer, and the winner's next steps."""
    lines = [*tables_md(comparison["table"]), comparison.get("answer", ""), "", *next_steps_md(comparison)]
    return "\n".join(lines)


