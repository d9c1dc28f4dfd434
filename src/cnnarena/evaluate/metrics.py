"""Test metrics from logits: loss, accuracy, top-k, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .class_scores import class_report, confusion


def compute_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    labels = labels.long()
    pred = logits.argmax(1)
    k_values = [k for k in (3, 5) if k < len(classes)]
    topk = {f"test_top{k}_accuracy": (logits.topk(k, 1).indices == labels[:, None]).any(1).float().mean().item()
            for k in k_values}
    cm = confusion(labels.numpy(), pred.numpy(), len(classes))
    report = class_report(cm, classes)
    per_class = {c: {m: report[c][m] for m in ("precision", "recall", "f1-score", "support")} for c in classes}
    return {
        "test_loss": F.cross_entropy(logits, labels).item(),
        "test_accuracy": (pred == labels).float().mean().item(),
        # the mean recall over the classes present in the test set: plain accuracy hides a model ignoring small ones
        "balanced_accuracy": float(np.mean([r["recall"] for r in per_class.values() if r["support"] > 0])),
        "per_class_recall": {c: per_class[c]["recall"] for c in classes},
        **topk,
        "macro_precision": report["macro avg"]["precision"],
        "macro_recall": report["macro avg"]["recall"],
        "macro_f1": report["macro avg"]["f1-score"],
        "weighted_precision": report["weighted avg"]["precision"],
        "weighted_recall": report["weighted avg"]["recall"],
        "weighted_f1": report["weighted avg"]["f1-score"],
        "test_samples": int(labels.numel()),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def score_images(model, images: torch.Tensor, labels: torch.Tensor, classes: list[str], *, batch_size: int,
                 tta: bool, shift: int) -> tuple[dict[str, Any], torch.Tensor]:
    """The metrics and logits of a model on labelled images; under test-time augmentation also
    `test_accuracy_one_view`, what an exported model (one view) scores. The run's test and `cnnarena evaluate`."""
    from .inference import predict_views

    logits, one_view = predict_views(model, images, batch_size=batch_size, tta=tta, shift=shift)
    metrics = compute_metrics(logits, labels, classes)
    if tta:
        metrics["test_accuracy_one_view"] = (one_view.argmax(1) == labels.long()).float().mean().item() \
            if labels.numel() else 0.0
    return metrics, logits


def format_accuracy(m: dict[str, Any], tail: str = "") -> str:
    """The closing line(s): accuracy, macro F1 and loss, then, under test-time augmentation, the one-view accuracy an
    exported model gets."""
    line = f"test accuracy {m['test_accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  test loss {m['test_loss']:.4f}{tail}"
    if "test_accuracy_one_view" in m:
        line += (f"\n  (test-time augmentation; one view, as an exported model predicts: "
                 f"{m['test_accuracy_one_view']:.4f})")
    return line


def format_per_class(metrics: dict[str, Any]) -> str:
    """The per-class table a person reads (like sklearn's classification_report)."""
    rows = metrics["per_class"]
    width = max(12, *(len(c) for c in rows))
    lines = [f"{'class':<{width}}  precision  recall  f1-score  support"]
    for c, r in rows.items():
        lines.append(f"{c:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1-score']:8.4f}  "
                     f"{int(r['support']):7d}")
    n = metrics["test_samples"]
    for avg in ("macro", "weighted"):
        lines.append(f"{avg + ' avg':<{width}}  {metrics[avg + '_precision']:9.4f}  {metrics[avg + '_recall']:6.4f}  "
                     f"{metrics[avg + '_f1']:8.4f}  {n:7d}")
    lines.append(f"{'accuracy':<{width}}  {'':9}  {'':6}  {metrics['test_accuracy']:8.4f}  {n:7d}")
    return "\n".join(lines)


def normalised_confusion(cm: list[list[int]]) -> np.ndarray:
    m = np.asarray(cm, dtype=float)
    return m / np.maximum(m.sum(1, keepdims=True), 1)
