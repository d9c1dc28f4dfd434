"""Numbers a comparison rests on: McNemar's exact test, mean ± std over seeds, generated trade-offs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import binomtest


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test on paired predictions of the same test images.

    Only the discordant pairs carry information: b = A right & B wrong, c = A wrong & B right.
    Under H0 (equal error rates) b ~ Binomial(b + c, 1/2); the two-sided p-value is
    min(1, 2 · P(X <= min(b, c))).
    """
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b_.shape:
        raise ValueError("McNemar needs predictions on the same test images")
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    p = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5, alternative="less").pvalue * 2)
    return {"a_right_b_wrong": b, "a_wrong_b_right": c, "p_value": min(1.0, p), "n": int(a.size)}


def seconds(value: float) -> str:
    """A duration as people write it: 0.4 s, 7.5 s, 131 s."""
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def tradeoffs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model, every figure relative to the best model on that axis.

    rows need: model, accuracy, train_seconds, params, latency_ms, throughput.
    """
    if not rows:
        return []
    best_acc = max(r["accuracy"] for r in rows)
    fastest = min(r["train_seconds"] for r in rows)
    smallest = min(r["params"] for r in rows)
    quickest = min(r["latency_ms"] for r in rows)
    out = []
    for r in rows:
        dominated_by = [o["model"] for o in rows if o is not r and o["accuracy"] >= r["accuracy"]
                        and o["train_seconds"] <= r["train_seconds"]
                        and (o["accuracy"] > r["accuracy"] or o["train_seconds"] < r["train_seconds"])]
        out.append({
            "model": r["model"],
            "accuracy_gap_points": round(100 * (best_acc - r["accuracy"]), 2),
            "train_time_x_fastest": round(r["train_seconds"] / max(fastest, 1e-9), 2),
            "params_x_smallest": round(r["params"] / max(smallest, 1), 2),
            "latency_x_quickest": round(r["latency_ms"] / max(quickest, 1e-9), 2),
            "pareto_optimal": not dominated_by,
            "dominated_by": dominated_by,
        })
    return out


IMBALANCED = 3.0  # largest / smallest class above this: plain accuracy hides a model that ignores small classes


def ranking_key(imbalance_ratio: float | None) -> str:
    """What the study ranks by: accuracy, or macro-F1 when the classes are imbalanced."""
    return "macro_f1" if imbalance_ratio is not None and imbalance_ratio > IMBALANCED else "accuracy"


def verdict(rows: list[dict[str, Any]], test: dict[str, Any] | None, imbalance_ratio: float | None = None,
            equal_budget: bool = False) -> list[str]:
    """Sentences built from the measured numbers (what a report's conclusion would say). Under an equal budget
    training times differ only by when a run stopped, so no line compares them."""
    if not rows:
        return []
    key = ranking_key(imbalance_ratio)
    by_acc = sorted(rows, key=lambda r: -r[key])
    best = by_acc[0]
    if key == "macro_f1":
        lines = [f"The classes are imbalanced ({imbalance_ratio:.1f}x largest to smallest, above {IMBALANCED:g}x): "
                 f"models are ranked by macro-F1, which weighs every class equally.",
                 f"Best macro-F1: {best['model']} at {100 * best['macro_f1']:.2f}% "
                 f"({100 * best['accuracy']:.2f}% test accuracy)."]
    else:
        lines = [f"Most accurate: {best['model']} at {100 * best['accuracy']:.2f}% test accuracy."]
    if len(by_acc) > 1:
        second = by_acc[1]
        gap = 100 * (best[key] - second[key])
        ratio = best["train_seconds"] / max(second["train_seconds"], 1e-9)
        lines.append(f"It beats {second['model']} by {gap:.2f} points" + ("." if equal_budget else
                     f", training {ratio:.2f}× as long ({seconds(best['train_seconds'])} vs "
                     f"{seconds(second['train_seconds'])})."))
        if test is not None:
            significant = test["p_value"] < 0.05
            runs = test.get("runs", "one run each")
            lines.append(f"McNemar's exact test, {test['a']} vs {test['b']}, on the same {test['n']} test images "
                         f"({runs}): "
                         f"p = {test['p_value']:.3g} ({test['a_right_b_wrong']} vs {test['a_wrong_b_right']} "
                         "discordant images) — the "
                         f"difference is {'' if significant else 'not '}significant at the 5% level.")
    fastest = min(rows, key=lambda r: r["train_seconds"])
    if fastest is not best and not equal_budget:
        lines.append(f"Fastest to train: {fastest['model']} ({seconds(fastest['train_seconds'])}, "
                     f"{100 * fastest['accuracy']:.2f}%).")
    smallest = min(rows, key=lambda r: r["params"])
    lines.append(f"Smallest: {smallest['model']} with {smallest['params']:,} parameters; quickest to answer one "
                 f"image: {min(rows, key=lambda r: r['latency_ms'])['model']}.")
    return lines


def fraction_winners(curves: dict[str, dict[float, float]]) -> list[dict[str, Any]]:
    """For each training-set fraction, which model has the best test accuracy (and by how much)."""
    fractions = sorted({f for c in curves.values() for f in c})
    out = []
    for f in fractions:
        scores = {m: c[f] for m, c in curves.items() if f in c and not math.isnan(c[f])}
        if not scores:
            continue
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        margin = ranked[0][1] - ranked[1][1] if len(ranked) > 1 else 0.0
        out.append({"fraction": f, "winner": ranked[0][0], "accuracy": ranked[0][1],
                    "margin_points": round(100 * margin, 2)})
    return out
