"""Figures of one run: training curves, confusion matrices, the most confident mistakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ..evaluate.metrics import normalised_confusion
from ..figure_text import literal


def subplots(*args: Any, figsize: tuple[float, float] | None = None, **kwargs: Any) -> tuple[Figure, Any]:
    """plt.subplots without pyplot: a bare Figure, drawn by Agg when saved. pyplot would switch the process's
    backend and keep every figure in its registry (a notebook's own inline plots would change), and importing it
    costs a command's start-up a few tenths of a second."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _save(fig, path: Path, trim: bool = True) -> Path:
    """`trim`: cut the margins to what is drawn (one more drawing pass; not needed after tight_layout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # tight_layout leaves a placeholder layout engine behind, and savefig then draws the whole figure once more
    # before the real drawing, for nothing: the margins are already set
    fig.set_layout_engine(None)
    fig.savefig(path, dpi=110, bbox_inches="tight" if trim else None)
    return path


def training_curves(history: list[dict[str, Any]], path: Path, phase_boundary: int | None = None,
                    title: str = "") -> Path:
    """Loss and accuracy, train vs validation; a dashed line where fine-tuning unfroze the backbone."""
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig, axes = subplots(1, 2, figsize=(10, 3.8))
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
        fig.suptitle(literal(title))
    return _save(fig, path)


def confusion_matrices(cm: list[list[int]], classes: list[str], path: Path) -> Path:
    """Counts and row-normalised (recall per class) side by side."""
    n = len(classes)
    size = max(4.5, 0.45 * n + 2)
    fig, axes = subplots(1, 2, figsize=(2 * size + 1, size))
    counts = np.asarray(cm)
    for ax, data, title, fmt in ((axes[0], counts, "counts", "d"), (axes[1], normalised_confusion(cm),
                                                                     "row-normalised", ".2f")):
        ax.imshow(data, cmap="Blues")
        ax.set_title(title)
        ax.set_xticks(range(n), [literal(c) for c in classes], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), [literal(c) for c in classes], fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 20:
            limit = data.max() / 2 if data.size else 0
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=9 if n <= 12 else 7,
                            color="white" if data[i, j] > limit else "black")
    fig.tight_layout()
    return _save(fig, path, trim=n > 12)  # tight_layout leaves the titles of larger grids cut


def top_mistakes(images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, classes: list[str],
                 path: Path, count: int = 16) -> Path:
    """The wrong predictions the model was most sure of: where to look first for label noise or confusion."""
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    wrong = (pred != labels).nonzero().flatten()
    order = wrong[conf[wrong].argsort(descending=True)][:count].tolist()
    cols = 8
    rows = max(1, -(-len(order) // cols))
    fig, ax = subplots(figsize=(cols * 1.6, rows * 1.9))
    ax.axis("off")
    if order:  # one mosaic on one axes: 16 axes of their own cost more to draw than the images
        mosaic, cell = _mosaic(images[order], cols)
        ax.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, vmin=0, vmax=255)
        for k, i in enumerate(order):
            row, col = divmod(k, cols)
            ax.text((col + 0.5) * cell[1], row * cell[0] + cell[0] - cell[1] - 1,
                    literal(f"true {classes[labels[i]]}\npred {classes[pred[i]]} {conf[i]:.0%}"), fontsize=7,
                    ha="center", va="bottom")
    else:
        ax.text(0.5, 0.5, "no mistakes", ha="center", transform=ax.transAxes)
    fig.suptitle("most confident mistakes", fontsize=9)
    return _save(fig, path)


def _mosaic(images: torch.Tensor, cols: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The uint8 N×C×H×W images tiled `cols` to a row on white, each centred in the square at the bottom of its
    cell, below room for two lines of text (a cell 1.6 wide and 1.9 high, as the figure is); (the mosaic, (cell
    height, cell width)) in pixels."""
    n, channels, h, w = images.shape
    width = int(max(h, w) * 1.15)
    height = int(round(width * 1.9 / 1.6))
    rows = -(-n // cols)
    out = np.full((rows * height, cols * width, channels), 255, dtype=np.uint8)
    for k, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        row, col = divmod(k, cols)
        top, left = (row + 1) * height - width + (width - h) // 2, col * width + (width - w) // 2  # centred
        out[top:top + h, left:left + w] = image
    return (out[..., 0] if channels == 1 else out), (height, width)
