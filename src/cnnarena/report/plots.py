"""Figures of one run: training curves, confusion matrices, the most confident mistakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..evaluate.metrics import normalised_confusion  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def training_curves(history: list[dict[str, Any]], path: Path, phase_boundary: int | None = None,
                    title: str = "") -> Path:
    """Loss and accuracy, train vs validation; a dashed line where fine-tuning unfroze the backbone."""
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label, scale in ((axes[0], "loss", "loss", 1), (axes[1], "accuracy", "accuracy (%)", 100)):
        ax.plot(epochs, [scale * r[f"train_{key}"] for r in history], "o-", ms=3, label="train")
        ax.plot(epochs, [scale * r[f"val_{key}"] for r in history], "o-", ms=3, label="validation")
        if phase_boundary is not None:
            ax.axvline(phase_boundary + 0.5, color="grey", ls="--", lw=1, label="unfreeze")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def confusion_matrices(cm: list[list[int]], classes: list[str], path: Path) -> Path:
    """Counts and row-normalised (recall per class) side by side."""
    n = len(classes)
    size = max(4.5, 0.45 * n + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    counts = np.asarray(cm)
    for ax, data, title, fmt in ((axes[0], counts, "counts", "d"), (axes[1], normalised_confusion(cm),
                                                                     "row-normalised", ".2f")):
        ax.imshow(data, cmap="Blues")
        ax.set_title(title)
        ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 20:
            limit = data.max() / 2 if data.size else 0
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=9 if n <= 12 else 7,
                            color="white" if data[i, j] > limit else "black")
    fig.tight_layout()
    return _save(fig, path)


def top_mistakes(images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, classes: list[str],
                 path: Path, count: int = 16) -> Path:
    """The wrong predictions the model was most sure of: where to look first for label noise or confusion."""
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    wrong = (pred != labels).nonzero().flatten()
    order = wrong[conf[wrong].argsort(descending=True)][:count]
    cols = 8
    rows = max(1, -(-len(order) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order.tolist(), strict=False):
        img = images[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None)
        ax.set_title(f"true {classes[labels[i]]}\npred {classes[pred[i]]} {conf[i]:.0%}", fontsize=7)
    if len(order) == 0:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center")
    fig.suptitle("most confident mistakes", fontsize=9)
    return _save(fig, path)
