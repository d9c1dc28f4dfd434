"""The one table: rows from a results dict, targets judged met / missed / not measured. Pure functions.

A results dict is what `python -m benchmarks` writes as JSON (see __main__.py): each measurement is
either a figure or {"not_measured": reason}; nothing here measures anything.
"""

from __future__ import annotations

from typing import Any

CNNARENA, PLAIN, KERAS = "cnnarena", "plain PyTorch", "Keras/TF"
TRAIN_IMPLS = {
    CNNARENA: "cnnarena (BatchLoader + fit, channels_last)",
    PLAIN: "plain PyTorch (DataLoader, float NCHW, Adam)",
    KERAS: "Keras 3 on TensorFlow (fit, Adam)",
}
EAGER, ORT = "cnnarena PyTorch eager", "cnnarena ONNX Runtime"
K_PREDICT, K_BULK, K_CALL = "Keras predict()", "Keras predict() bulk", "Keras call"
BULK_BATCHES = 10  # Keras predict() bulk: one call predicts this many batches, so its per-call setup is shared
INFER_IMPLS = {
    EAGER: "cnnarena, PyTorch eager",
    ORT: "cnnarena, ONNX Runtime (CPU EP)",
    K_PREDICT: "Keras model.predict(batch)",
    K_BULK: f"Keras model.predict({BULK_BATCHES} batches, batch_size=b)",
    K_CALL: "Keras model(batch, training=False), eager",
}
MET, MISSED, NOT_MEASURED = "MET", "MISSED", "NOT MEASURED"
REPORT_EPOCHS = 10  # the reports' pipeline; fewer (--keras-epochs) makes the accuracy comparison indicative
EXPECTED_PARAMS = 429_450


def _ips(entry: dict[str, Any] | None) -> float | None:
    return entry.get("images_per_second") if entry else None


def _why(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "not run"
    return entry.get("not_measured", "no figure")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def time_to(curve: list[dict[str, Any]], accuracy: float) -> dict[str, Any] | None:
    """The first point of an accuracy curve at or above `accuracy` (None when never reached)."""
    return next((p for p in curve if p["test_accuracy"] >= accuracy - 1e-9), None)


def _reach(fast: dict[str, Any], accuracy: float, budget: float, what: str) -> tuple[str, str]:
    """(status, figure) for 'fast reaches `accuracy` within `budget` seconds'."""
    point = time_to(fast["curve"], accuracy)
    if point is not None:
        status = MET if point["seconds"] <= budget else MISSED
        return status, f"{point['seconds']:.0f} s (epoch {point['epoch']}, {point['test_accuracy']:.2%}) vs {what}"
    best = max((p["test_accuracy"] for p in fast["curve"]), default=0.0)
    total = fast["curve"][-1]["seconds"] if fast["curve"] else 0.0
    if total > budget:
        return MISSED, f"not reached in {total:.0f} s (best {best:.2%}) vs {what}"
    if fast.get("capped"):
        return NOT_MEASURED, (f"run capped at {fast['epochs']} of {fast['recipe_epochs']} epochs (--fast-epochs): "
                              f"best {best:.2%} in {total:.0f} s")
    return MISSED, f"never reached: best {best:.2%} after the whole recipe ({total:.0f} s)"


def targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """Every target of the issue, judged from the results: MET / MISSED (with the figure) / NOT MEASURED."""
    out: list[dict[str, str]] = []

    def add(target: str, status: str, figure: str) -> None:
        out.append({"target": target, "status": status, "figure": figure})

    train = results.get("train", {})
    for need, other in ((1.5, PLAIN), (2.0, KERAS)):
        for batch in ("32", "256"):
            row = train.get(batch, {})
            c, o = row.get(CNNARENA), row.get(other)
            label = f"cnnarena training >= {need:g}x {other}, batch {batch}"
            r = _ratio(_ips(c), _ips(o))
            if r is None:
                missing = CNNARENA if _ips(c) is None else other
                add(label, NOT_MEASURED, f"{missing}: {_why(c if missing == CNNARENA else o)}")
            else:
                add(label, MET if r >= need else MISSED, f"{r:.2f}x ({_ips(c):,.0f} vs {_ips(o):,.0f} img/s)")

    acc = results.get("accuracy", {})
    report, fast = acc.get("report"), acc.get("fast")
    label = "fast reaches the report pipeline's test accuracy >= 5x sooner"
    if not report or "not_measured" in report:
        add(label, NOT_MEASURED, f"report pipeline: {_why(report)}")
    elif not fast or "not_measured" in fast:
        add(label, NOT_MEASURED, f"fast: {_why(fast)}")
    else:
        budget = report["wall_seconds"] / 5
        versus = f"{report['wall_seconds']:.0f} s / 5 = {budget:.0f} s for {report['test_accuracy']:.2%}"
        status, figure = _reach(fast, report["test_accuracy"], budget, versus)
        point = time_to(fast["curve"], report["test_accuracy"])
        if point is not None:
            figure = f"{report['wall_seconds'] / max(point['seconds'], 1e-9):.1f}x sooner: " + figure
        if report.get("epochs") != REPORT_EPOCHS:
            n = report.get("epochs")
            figure += f" [report pipeline shortened to {n} epoch{'' if n == 1 else 's'}: indicative only]"
        add(label, status, figure)
    # The 10-minute target belongs to fast-large when the run has it (older results only have fast).
    large_name = "fast-large" if "fast-large" in acc else "fast"
    for name, accuracy, budget in (("fast", 0.93, 180), (large_name, 0.94, 600)):  # issue 36
        entry = acc.get(name)
        label = f"{name} >= {accuracy:.1%} test accuracy within {budget // 60} min (data loading included)"
        if not entry or "not_measured" in entry:
            add(label, NOT_MEASURED, f"{name}: {_why(entry)}")
        else:
            add(label, *_reach(entry, accuracy, budget, f"{budget} s"))
    return out


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(section, measurement, result, detail) for every measurement, in print order."""
    out: list[tuple[str, str, str, str]] = []
    params = results.get("params", {})
    if params:
        counts = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in params.items())
        same = all(v == EXPECTED_PARAMS for v in params.values())
        out.append(("model", "simple-2conv trainable parameters", f"{EXPECTED_PARAMS:,}" if same else "MISMATCH",
                    counts))

    for batch, impls in results.get("train", {}).items():
        c = _ips(impls.get(CNNARENA))
        for key, label in TRAIN_IMPLS.items():
            entry = impls.get(key)
            out.append(("train", f"b={batch:<4} {label}", *_throughput_cells(entry, c if key != CNNARENA else None)))

    acc = results.get("accuracy", {})
    report, fast = acc.get("report"), acc.get("fast")
    if report is not None:
        epochs = report.get("epochs")
        name = "report pipeline: Keras simple-2conv, Adam 1e-3, b=32" + (
            f", {epochs} epoch{'' if epochs == 1 else 's'}" if epochs else "")
        if "not_measured" in report:
            out.append(("accuracy", name, f"not measured: {report['not_measured']}", ""))
        else:
            curve = ", ".join(f"{p['test_accuracy']:.2%}@{p['seconds']:.0f}s" for p in report.get("curve", []))
            out.append(("accuracy", name, f"{report['test_accuracy']:.2%} in {report['wall_seconds']:.0f} s",
                        f"fit {report['fit_seconds']:.0f} s, test evaluate {report['eval_seconds']:.1f} s; "
                        f"per epoch: {curve}"))
    if fast is not None:
        out.extend(_fast_rows(fast, report, "fast"))
    if acc.get("fast-large") is not None:
        out.extend(_fast_rows(acc["fast-large"], None, "fast-large"))

    for batch, impls in results.get("inference", {}).items():
        e = _ips(impls.get(EAGER))
        for key, label in INFER_IMPLS.items():
            if key not in impls:  # e.g. bulk predict at batch 1: not a measurement of this batch size
                continue
            entry = impls.get(key)
            out.append(("inference", f"b={batch:<4} {label}", *_throughput_cells(entry, None, e if key != EAGER
                                                                                  else None)))

    for t in targets(results):
        out.append(("target", t["target"], t["status"], t["figure"]))
    return out


def _fast_rows(fast: dict[str, Any], report: dict[str, Any] | None, model: str) -> list[tuple[str, str, str, str]]:
    """The accuracy rows of one cnnarena preset run (and its time to the report's accuracy, given `report`)."""
    out: list[tuple[str, str, str, str]] = []
    name = f"cnnarena {model} (its recipe)" + (f", val_frac {fast['val_frac']}" if "val_frac" in fast else "")
    if "not_measured" in fast:
        out.append(("accuracy", name, f"not measured: {fast['not_measured']}", ""))
    else:
        if report is not None and "not_measured" not in report:
            point = time_to(fast["curve"], report["test_accuracy"])
            target = f"{report['test_accuracy']:.2%}"
            if point is None:
                out.append(("accuracy", f"cnnarena {model} to the report's {target}", "not reached",
                            f"best {max(p['test_accuracy'] for p in fast['curve']):.2%}"))
            else:
                ratio = report["wall_seconds"] / max(point["seconds"], 1e-9)
                out.append(("accuracy", f"cnnarena {model} to the report's {target}", f"{point['seconds']:.0f} s",
                            f"epoch {point['epoch']} of {fast['epochs']}: {ratio:.1f}x sooner than the report "
                            f"pipeline"))
        curve = ", ".join(f"{p['test_accuracy']:.2%}@{p['seconds']:.0f}s" for p in fast["curve"])
        capped = f" (capped from {fast['recipe_epochs']})" if fast.get("capped") else ""
        out.append(("accuracy", name,
                    f"{fast['final_test_accuracy']:.2%} in {fast['wall_seconds']:.0f} s",
                    f"{fast['epochs']} epochs{capped}, data {fast.get('data_seconds', 0):.1f} s; "
                    f"per epoch: {curve}"))
    return out


def _throughput_cells(entry: dict[str, Any] | None, cnnarena: float | None,
                      eager: float | None = None) -> tuple[str, str]:
    if entry is None:
        return "not measured: not run", ""
    if "not_measured" in entry:
        return f"not measured: {entry['not_measured']}", ""
    ips = entry["images_per_second"]
    rounds = entry.get("rounds", [])
    detail = (f"median of {len(rounds)} round{'s' if len(rounds) != 1 else ''} x "
              f"{entry.get('steps_per_round', '?')} steps")
    if len(rounds) > 1:
        detail += f" ({min(rounds):,.0f}-{max(rounds):,.0f})"
    if cnnarena:
        detail += f"; cnnarena is {cnnarena / ips:.2f}x this"
    if eager:
        detail += f"; {ips / eager:.2f}x PyTorch eager"
    return f"{ips:,.0f} img/s", detail


def format_table(results: dict[str, Any]) -> str:
    """The header lines and the table, as printed."""
    meta = results.get("meta", {})
    head = [f"cnnarena speed, side by side ({meta.get('started', '')})"] if meta else []
    for key in ("machine", "software", "method"):
        if meta.get(key):
            head.append(f"  {key}: {meta[key]}")
    body = rows(results)
    header = ("section", "measurement", "result", "detail")
    caps = (9, 64, 22)
    widths = [max([len(header[i])] + [len(r[i]) for r in body if len(r[i]) <= caps[i]]) for i in range(3)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header[:3], widths, strict=True)) + "  " + header[3],
             "  ".join("-" * w for w in widths) + "  " + "-" * 6]
    for r in body:
        lines.append(("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]).rstrip())
    return "\n".join(head + lines)
