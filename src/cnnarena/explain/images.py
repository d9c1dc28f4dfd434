"""`cnnarena explain`: heat maps for image files, a PNG per image, one grid, and explanations.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..files import atomic_write_text
from .cam import class_index, explain, pick_layer
from .figures import Cell, grid_figure, image_figure, overlay, plain

GRID_MAX = 48  # images in grid.png (every image still gets its own PNG)


@dataclass
class Explained:
    path: str
    png: str | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    target: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "png": self.png, "target": self.target, "error": self.error,
                "predictions": [{"label": label, "probability": round(p, 6)} for label, p in self.top]}


def _png_name(path: Path, used: set[str]) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem)[:60] or "image"
    name, n = f"{stem}.png", 1
    while name in used or name == "grid.png":
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name


def explain_files(model, paths: list[Path], out: Path, *, method: str = "gradcam", target: str | None = None,
                  layer: str | None = None, top: int = 5, batch_size: int = 16) -> dict[str, Any]:
    """Explain every readable file under `paths`; unreadable ones are listed with the reason. Returns the summary
    written to out/explanations.json."""
    import torch

    from ..data.imageio import Unreadable
    from ..evaluate.predict import collect_images, decode_for, top_k

    meta = model.meta
    files = collect_images(paths)
    if not files:
        raise UserError(f"no image files found in {', '.join(map(str, paths))}")
    target_index = class_index(meta.classes, target) if target is not None else None
    rows = [Explained(str(p)) for p in files]
    decoded, readable = [], []
    for row, path in zip(rows, files, strict=True):
        try:
            decoded.append(decode_for(meta, str(path)))
            readable.append(row)
        except Unreadable as e:
            row.error = e.reason
    if not readable:
        raise UserError(f"none of the {len(rows)} files could be read: {rows[0].path} ({rows[0].error})"
                        + (" …" if len(rows) > 1 else ""))
    model.eval()
    device = next(model.parameters()).device
    images = torch.from_numpy(np.stack(decoded))
    chosen = pick_layer(model, images[:1].to(device).float().div(255.0), layer)
    targets = None if target_index is None else [target_index] * len(images)
    result = explain(model, images, method=method, targets=targets, layer=chosen, batch_size=batch_size)

    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    grid_rows = []
    for i, row in enumerate(readable):
        row.top = top_k(result.probs[i:i + 1], meta.classes, top)[0]
        row.target = meta.classes[result.targets[i]]
        p_target = float(result.probs[i, result.targets[i]])
        note = f"{method} of {row.target} ({p_target:.0%})"
        row.png = _png_name(Path(row.path), used)
        image_figure(decoded[i], result.heat[i], row.top, Path(row.path).name, note, out / row.png)
        if len(grid_rows) < GRID_MAX:
            grid_rows.append([Cell(plain(decoded[i]), Path(row.path).name),
                              Cell(overlay(decoded[i], result.heat[i]), f"{row.target} {p_target:.0%}")])
    grid = grid_figure(grid_rows, ["input", f"{method} · {chosen.name}"], out / "grid.png")
    summary = {"model": meta.name, "method": method, "layer": chosen.name,
               "layer_shape": list(chosen.shape), "target": target, "grid": grid.name,
               "images": [r.to_json() for r in rows]}
    atomic_write_text(out / "explanations.json", json.dumps(summary, indent=1))
    return summary
