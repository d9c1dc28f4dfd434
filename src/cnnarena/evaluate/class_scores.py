"""The confusion matrix and per-class precision, recall and F1, as scikit-learn's `confusion_matrix` and
`classification_report(output_dict=True, zero_division=0)` give them, computed with numpy.

Every run scores its test set here; importing scikit-learn for it would cost about 2 s of every run's start-up.
tests/test_same_as_scikit_learn.py checks these figures against scikit-learn's own.
"""

from __future__ import annotations

import numpy as np


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """classes×classes counts: row = true class, column = predicted class."""
    truth, predicted = np.asarray(truth, np.int64), np.asarray(predicted, np.int64)
    return np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def class_report(matrix: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """From a confusion matrix (`confusion`), per class (by name) and for "macro avg" and "weighted avg":
    precision, recall, f1-score and support; a score whose denominator is zero is 0."""
    hits = np.diag(matrix).astype(float)
    support, predictions = matrix.sum(1), matrix.sum(0)
    precision = _ratio(hits, predictions.astype(float))
    recall = _ratio(hits, support.astype(float))
    f1 = _ratio(2 * hits, (support + predictions).astype(float))  # 2PR / (P + R), as scikit-learn computes it
    report = {name: {"precision": float(p), "recall": float(r), "f1-score": float(f), "support": int(s)}
              for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)}
    total = int(support.sum())
    for avg, weights in (("macro avg", None), ("weighted avg", support if total else None)):
        report[avg] = {"precision": float(np.average(precision, weights=weights)),
                       "recall": float(np.average(recall, weights=weights)),
                       "f1-score": float(np.average(f1, weights=weights)), "support": total}
    return report


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)
