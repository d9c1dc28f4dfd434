"""Heat maps drawn over their images: one overlay, one figure per image, grids of images x models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..figure_text import literal

DISPLAY_SIDE = 160  # small images (8x8 digits, 28x28 Fashion-MNIST) are enlarged to about this for display


def display_factor(side: int) -> int:
    return max(1, round(DISPLAY_SIDE / max(1, side)))


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 C x H x W (1 or 3 channels) -> float H x W x 3 in [0, 1]."""
    x = image.astype(np.float32) / 255.0
    x = np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x
    return x.transpose(1, 2, 0)


def enlarge(rgb: np.ndarray, heat: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels enlarged by an integer factor (nearest: the pixels stay visible), the map smoothly (bilinear)."""
    import cv2

    k = display_factor(rgb.shape[0])
    if k == 1:
        return rgb, heat
    big = rgb.repeat(k, axis=0).repeat(k, axis=1)
    if heat is not None:
        heat = cv2.resize(heat, (big.shape[1], big.shape[0]), interpolation=cv2.INTER_LINEAR)
    return big, heat


def overlay(image: np.ndarray, heat: np.ndarray, image_weight: float = 0.55) -> np.ndarray:
    """uint8 H' x W' x 3: the heat map (jet colours) over the image, enlarged for display."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb, big_heat = enlarge(to_rgb(image), heat)
    return show_cam_on_image(rgb, np.clip(big_heat, 0, 1), use_rgb=True, image_weight=image_weight)


def plain(image: np.ndarray) -> np.ndarray:
    rgb, _ = enlarge(to_rgb(image))
    return (rgb * 255).round().astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def image_figure(image: np.ndarray, heat: np.ndarray, top: Sequence[tuple[str, float]], title: str,
                 note: str, path: Path) -> Path:
    """One image's PNG: the input, the overlay, the top-k classes as bars."""
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no GUI backend

    fig = Figure(figsize=(9.6, 3.2))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.25]})
    axes[0].imshow(plain(image))
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(overlay(image, heat))
    axes[1].set_title(literal(note), fontsize=9)
    for ax in axes[:2]:
        ax.set_axis_off()
    labels = [label for label, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    axes[2].barh(range(len(top)), probs, color=["#9aa5b1"] * (len(top) - 1) + ["#2563eb"])
    axes[2].set_yticks(range(len(top)), [_short(label) for label in labels], fontsize=8)
    axes[2].set_xlim(0, 1)
    axes[2].set_title("top classes", fontsize=9)
    axes[2].tick_params(axis="x", labelsize=7)
    fig.suptitle(_short(title, 80), fontsize=10)
    fig.tight_layout()
    fig.set_layout_engine(None)  # else savefig draws the figure once more for the placeholder engine left
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


@dataclass
class Cell:
    pixels: np.ndarray  # H x W x 3 uint8, for display
    caption: str
    good: bool | None = None  # right (green caption), wrong (red), or neither


def grid_figure(rows: Sequence[Sequence[Cell]], columns: Sequence[str], path: Path, *,
                row_labels: Sequence[str] | None = None, cell_inches: float = 1.7) -> Path:
    """A grid of images: one row per image, one column per view (the input, then a model's heat map...)."""
    from matplotlib.figure import Figure

    n_rows, n_cols = len(rows), len(columns)
    fig = Figure(figsize=(cell_inches * n_cols, (cell_inches + 0.25) * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            ax = axes[r][c]
            ax.imshow(cell.pixels)
            ax.set_xticks([])
            ax.set_yticks([])
            colour = {True: "#15803d", False: "#b91c1c"}.get(cell.good, "#333333")
            ax.set_xlabel(_short(cell.caption, 28), fontsize=7, color=colour)
            if r == 0:
                ax.set_title(_short(columns[c], 24), fontsize=8)
        if row_labels:
            axes[r][0].set_ylabel(_short(row_labels[r], 22), fontsize=7)
    fig.tight_layout()
    fig.set_layout_engine(None)  # else savefig draws the figure once more for the placeholder engine left
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _short(text: str, width: int = 18) -> str:
    """`text` cut to `width` characters, as matplotlib draws it unchanged."""
    return literal(text if len(text) <= width else text[:width - 1] + "…")
