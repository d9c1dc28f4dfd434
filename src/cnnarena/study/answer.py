"""The study's answer, stated: which approach won, by how much, whether it is significant, at what budget and on
what machine, what each side cost, and what would change the answer. One paragraph, built from measured numbers
only; the report, comparison.md, Study.verdict and the command's last lines all print this same text."""

from __future__ import annotations

import shlex
from typing import Any

from .stats import seconds

APPROACH = {"custom": "training a custom CNN from scratch", "pretrained": "fine-tuning an ImageNet-pretrained network"}
WON = {"custom": "Training from scratch won", "pretrained": "Fine-tuning a pretrained network won"}


def time_spent(history: list[dict[str, Any]]) -> dict[str, float]:
    """Where a run's training time went, from its history: feature caches, the frozen-backbone phase, the
    fine-tuning phase (or plain training), validation passes."""
    caches = sum(r.get("feature_seconds", 0.0) + r.get("trunk_seconds", 0.0) for r in history)
    by_phase = {"frozen": 0.0, "fine-tune": 0.0, None: 0.0}
    epochs = {"frozen": 0, "fine-tune": 0, None: 0}
    for r in history:
        phase = r.get("phase") if r.get("phase") in by_phase else None
        by_phase[phase] += r["epoch_seconds"] - r.get("feature_seconds", 0.0) - r.get("trunk_seconds", 0.0)
        epochs[phase] += 1
    return {"caches": round(caches, 1), "frozen": round(by_phase["frozen"], 1),
            "fine_tune": round(by_phase["fine-tune"], 1), "training": round(by_phase[None], 1),
            "validation": round(sum(r.get("val_seconds", 0.0) for r in history), 1),
            "epochs_frozen": epochs["frozen"], "epochs_fine_tune": epochs["fine-tune"], "epochs": len(history)}


def contenders(table: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(winner, runner-up) of the question asked: the best of each approach when both are in the study (the
    table is ranked best first), else the two best models."""
    best = table[0]
    other = next((r for r in table if r["family"] != best["family"]), None)
    return best, other if other is not None else (table[1] if len(table) > 1 else None)


def paragraph(c: dict[str, Any]) -> str:
    """The answer, in words and figures, from a comparison (see runner.summarise)."""
    table = c["table"]
    if not table:
        return ""
    best, other = contenders(table)
    parts = [_headline(best, other, c), _significance(best, other, c), _setting(c),
             "Cost: " + "; ".join(_cost(r, c) for r in ([best, other] if other else [best])) + ".",
             _what_would_change(best, other, c)]
    return " ".join(p for p in parts if p)


def _score(r: dict[str, Any], key: str) -> str:
    return f"{100 * r[key]:.2f}%" + (f" ± {100 * r[key + '_std']:.2f}" if r.get(key + "_std") else "")


def _headline(best: dict[str, Any], other: dict[str, Any] | None, c: dict[str, Any]) -> str:
    key = c.get("ranked_by", "accuracy")
    what = "macro-F1 (the classes are imbalanced)" if key == "macro_f1" else "test accuracy"
    if other is None:
        return f"Only {best['model']} ran: {_score(best, key)} {what}."
    gap = 100 * (best[key] - other[key])
    if best["family"] == other["family"]:
        return (f"Only {APPROACH[best['family']]} was compared: {best['model']} reached {_score(best, key)} {what}, "
                f"{gap:.2f} points above {other['model']} ({_score(other, key)}).")
    scores = (f"{best['model']} reached {_score(best, key)} {what}, {gap:.2f} points above {other['model']} "
              f"({APPROACH[other['family']]}, {_score(other, key)})")
    if round(gap, 2) == 0:
        return (f"A tie: {best['model']} ({APPROACH[best['family']]}) and {other['model']} "
                f"({APPROACH[other['family']]}) both reached {_score(best, key)} {what}.")
    test = c.get("mcnemar") or {}
    favours_best = test.get("a") == best["model"] and test.get("a_right_b_wrong", 0) > test.get("a_wrong_b_right", 0)
    if test.get("p_value", 1.0) < 0.05 and favours_best:
        return f"{WON[best['family']]}: {scores}."
    return (f"No clear winner: {APPROACH[best['family']]} led, but not significantly: {scores}.")


def _significance(best: dict[str, Any], other: dict[str, Any] | None, c: dict[str, Any]) -> str:
    test = c.get("mcnemar")
    if other is None or not test:
        return ""
    p = test["p_value"]
    shown = "p < 0.001" if p < 0.001 else f"p = {p:.3g}"
    line = (f"McNemar's exact test on the same {test['n']:,} test images ({test['a_right_b_wrong']:,} only "
            f"{test['a']} got right, {test['a_wrong_b_right']:,} only {test['b']}): {shown}, "
            f"{'significant' if p < 0.05 else 'not significant'} at the 5% level.")
    if best.get("accuracy_std") and other.get("accuracy_std"):
        overlap = abs(best["accuracy"] - other["accuracy"]) < best["accuracy_std"] + other["accuracy_std"]
        line += (f" Over {best['seeds']} seeds the spreads {'overlap' if overlap else 'do not overlap'} "
                 f"(± {100 * best['accuracy_std']:.2f} and ± {100 * other['accuracy_std']:.2f} points).")
    return line


def _setting(c: dict[str, Any]) -> str:
    budget = (c.get("anytime") or {}).get("budget_seconds")
    when = (f"Each model had {seconds(budget)} of training" if budget
            else "Each model trained its own recipe's epochs (no equal budget: give --budget to compare at equal "
                 "time)")
    return f"{when} on {c.get('machine') or c.get('device', 'this machine')}."


def _cost(r: dict[str, Any], c: dict[str, Any]) -> str:
    spent = r.get("time_spent") or {}
    where = []
    if spent.get("caches"):
        where.append(f"{seconds(spent['caches'])} computing feature caches")
    if spent.get("epochs_frozen"):
        where.append(f"{seconds(spent['frozen'])} training the head on the frozen backbone for "
                     f"{_epochs(spent['epochs_frozen'])}")
    if spent.get("epochs_fine_tune"):
        where.append(f"{seconds(spent['fine_tune'])} fine-tuning for {_epochs(spent['epochs_fine_tune'])}")
    if spent.get("training"):
        where.append(f"{_epochs(spent['epochs'])}")
    at = f" at {r['input_px']} px" if r.get("input_px") else ""
    trained = f"{r['model']}{at} trained {seconds(r['train_seconds'])}"
    if where:
        trained += " (" + ", ".join(where) + ")"
    if spent.get("validation"):  # not part of train_seconds: validation passes are timed apart
        trained += f", plus {seconds(spent['validation'])} validating"
    memory = f", {r['train_memory_mb']:,.0f} MB peak training memory" if r.get("train_memory_mb") else ""
    return (f"{trained}; {r['params']:,} parameters, a {r['model_file_mb']:.1f} MB file, "
            f"{_ms(r['latency_ms'])} per image at batch 1{memory}")


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _what_would_change(best: dict[str, Any], other: dict[str, Any] | None, c: dict[str, Any]) -> str:
    notes = []
    anytime = c.get("anytime") or {}
    improving = [m for m in anytime.get("still_improving", []) if other is not None and m == other["model"]]
    if improving:
        notes.append(f"{improving[0]} was still improving when stopped, so more time could narrow the gap")
    elif best["model"] in anytime.get("still_improving", []):
        notes.append(f"{best['model']} was still improving when stopped")
    if other is not None:
        for cross in anytime.get("crossings", []):
            if {cross["a"], cross["b"]} == {best["model"], other["model"]}:
                notes.append(f"their validation curves cross at {', '.join(seconds(t) for t in cross['seconds'])}"
                             ", so which one leads depends on the time given")
        notes += _data_trend(best, other, c)
    if not notes:
        return "Nothing measured suggests the answer would change: no curve was still rising and none crossed."
    return "What could change the answer: " + "; ".join(notes) + "."


def _data_trend(best: dict[str, Any], other: dict[str, Any], c: dict[str, Any]) -> list[str]:
    """From the data-fraction curves (test accuracy): the smallest training set from which the winner leads at every
    larger one."""
    curves, sizes = c.get("fraction_curves") or {}, c.get("fraction_train_sizes") or {}
    a, b = curves.get(best["model"], {}), curves.get(other["model"], {})
    shared = sorted(set(a) & set(b), key=float)
    if len(shared) < 2:
        return []
    leads = [a[f] >= b[f] for f in shared]
    if not leads[-1]:  # ranked by macro-F1, behind on accuracy: the accuracy curves cannot say when it catches up
        return []
    if all(leads):
        return [f"none from the data: {best['model']} led on test accuracy at every training-set size tried "
                f"({', '.join(f'{sizes.get(f, 0):,}' for f in shared)} images)"]
    first = next(i for i in range(len(shared)) if all(leads[i:]))
    f = shared[first - 1]
    return [f"with {sizes.get(f, 0):,} training images ({100 * float(f):g}% of them) {other['model']} led by "
            f"{100 * (b[f] - a[f]):.2f} points; {best['model']} catches up from "
            f"{sizes.get(shared[first], 0):,} images"]


def next_steps(run_dir: str) -> list[tuple[str, str]]:
    """(what, command) for the winning run: serve it, export it, predict with it."""
    q = shlex.quote(str(run_dir))
    return [("serve it (web page and HTTP API)", f"cnnarena serve {q}"),
            ("export it to ONNX", f"cnnarena export {q} --format onnx"),
            ("export it to int8 ONNX (smaller, faster on CPU)", f"cnnarena export {q} --int8"),
            ("predict image files", f"cnnarena predict {q} IMAGES..."),
            ("load it in Python", f"run = cnnarena.load({str(run_dir)!r})")]
