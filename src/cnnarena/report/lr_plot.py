"""The learning-rate range test's figure (train/lr_finder.py computes the curve; this draws it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..train.lr_finder import LRFindResult


def plot_path(path: Path | str) -> Path:
    """Where plot_lr_find will write `path`: matplotlib appends .png to a name without a suffix, and
    refuses suffixes it cannot write; UserError for those (and for a directory) before any work starts."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    if path.is_dir():
        raise UserError(f"--out {path} is a directory: give a file name, e.g. {path / 'lr_find.png'}")
    if not path.suffix:
        return path.with_name(path.name + ".png")
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise UserError(f"--out {path}: cannot write a plot as {path.suffix!r}; use one of "
                        f"{', '.join('.' + f for f in sorted(formats))}")
    return path


def plot_lr_find(result: LRFindResult, path: Path | str) -> Path:
    """The plot, written to plot_path(path); returns that path."""
    from .plots import _save, subplots

    fig, ax = subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses)
    ax.set_xscale("log")
    ax.axvline(result.suggestion, color="red", ls="--", label=f"suggested {result.suggestion:.2e}")
    ax.axvline(result.min_loss_lr, color="grey", ls=":", label=f"minimum loss {result.min_loss_lr:.2e}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, plot_path(path))
