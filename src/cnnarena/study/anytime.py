"""Anytime curves: validation accuracy against wall-clock training time, per model, and what they say.

A verdict is a statement about the time each model was given. From every model's history (seed 0, whole training
set): the curve, its final test accuracy, whether it was still improving when it stopped, where two curves cross,
and the ranking at the time every model had (the shortest run's length).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import rundir

STILL_IMPROVING_POINTS = 0.1  # the last epoch raised the best validation accuracy by at least this many points


def curve(history: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(seconds since training started, validation accuracy) after every epoch; seconds include the validation
    passes and cache fills charged to epochs."""
    t, points = 0.0, []
    for row in history:
        t += row["epoch_seconds"] + row.get("val_seconds", 0.0)
        points.append((round(t, 2), row["val_accuracy"]))
    return points


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    return rundir.read_history(run_dir)


def still_improving(points: list[tuple[float, float]]) -> bool:
    if len(points) < 2:
        return True  # one epoch says nothing about a plateau
    best_before = max(acc for _, acc in points[:-1])
    return 100 * (points[-1][1] - best_before) >= STILL_IMPROVING_POINTS


def best_by(points: list[tuple[float, float]], seconds: float) -> float | None:
    """The best validation accuracy reached within `seconds` (None: no epoch ended by then)."""
    reached = [acc for t, acc in points if t <= seconds + 1e-9]
    return max(reached) if reached else None


def crossings(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[float]:
    """Times where the lead in best-so-far validation accuracy changes hands between two models."""
    times = sorted({t for t, _ in a} | {t for t, _ in b})
    out, leader = [], None
    for t in times:
        va, vb = best_by(a, t), best_by(b, t)
        if va is None or vb is None or va == vb:
            continue
        now = va > vb
        if leader is not None and now != leader:
            out.append(t)
        leader = now
    return out


def summarise(runs: dict[str, dict[str, Any]], budget_seconds: float | None) -> dict[str, Any]:
    """runs: model -> {"history": [...], "test_accuracy": float}. The anytime section of the comparison."""
    curves = {m: curve(r["history"]) for m, r in runs.items()}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return {}
    common = min(c[-1][0] for c in curves.values())  # every model had at least this long
    at_common = {m: best_by(c, common) for m, c in curves.items()}
    models = list(curves)
    cross = [{"a": a, "b": b, "seconds": ts} for i, a in enumerate(models) for b in models[i + 1:]
             if (ts := crossings(curves[a], curves[b]))]
    improving = [m for m, c in curves.items() if still_improving(c)]
    return {"curves": {m: [list(p) for p in c] for m, c in curves.items()},
            "test_accuracy": {m: runs[m]["test_accuracy"] for m in curves},
            "seconds": {m: c[-1][0] for m, c in curves.items()},
            "common_seconds": round(common, 1), "best_at_common": at_common, "crossings": cross,
            "still_improving": improving, "budget_seconds": budget_seconds}


def verdict_lines(anytime: dict[str, Any], device: str) -> list[str]:
    """'At 2.0 minutes each on this machine: ...; still improving: ...', and where the curves cross."""
    if not anytime:
        return []
    tests = anytime["test_accuracy"]
    ranked = sorted(tests, key=lambda m: -tests[m])
    budget = anytime.get("budget_seconds")
    when = f"At {_duration(budget)} each" if budget else "With each model's own recipe length"
    parts = ", ".join(f"{m} {100 * tests[m]:.2f}% ({_duration(anytime['seconds'][m])})" for m in ranked)
    lines = [f"{when} on this machine ({device}): {parts} test accuracy."]
    if len(ranked) > 1:
        common = anytime["common_seconds"]
        at = anytime["best_at_common"]
        leader = max(at, key=lambda m: at[m] if at[m] is not None else -1)
        lines.append(f"After {_duration(common)} (the shortest run's length), {leader} leads on validation accuracy "
                     f"({', '.join(f'{m} {100 * v:.2f}%' for m, v in at.items() if v is not None)}).")
    improving = anytime["still_improving"]
    lines.append(f"Still improving when stopped: {', '.join(improving)} — more time could change the ranking."
                 if improving else "No model was still improving when it stopped.")
    for c in anytime["crossings"]:
        at = ", ".join(_duration(t) for t in c["seconds"])
        lines.append(f"The curves of {c['a']} and {c['b']} cross at {at}: the lead in validation accuracy changes "
                     "hands, so which one wins depends on the time given.")
    if len(ranked) > 1 and not anytime["crossings"]:
        lines.append("The curves do not cross: wherever two models both have a point, the same one leads.")
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} minutes"
