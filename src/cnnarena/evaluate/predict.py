"""Predict labels for image files with a finished run's model: decoded exactly like training data.

Files are decoded with the same function the dataset cache uses (EXIF transpose, 16-bit scaling,
alpha on white, LANCZOS to the stored size), so a file scores the same here as it would in training.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import rundir
from ..data.folder import is_hidden
from ..data.imageio import Unreadable, decode_image, is_image_name
from ..errors import UserError

if TYPE_CHECKING:  # torch is imported only when a model runs: a mistyped path fails in a blink
    from ..models.base import Classifier, ModelMeta


@dataclass
class Prediction:
    """Top-k (label, probability) for one image, or why it could not be read."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error,
                "predictions": [{"label": label, "probability": p} for label, p in self.top]}


def check_run_dir(run_dir: Path) -> Path:
    """`run_dir` if it holds a finished run's model, else a one-line UserError saying why not."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file, not a run directory")
    if not (run_dir / rundir.MODEL_META).exists():
        hint = " (training has not finished yet?)" if (run_dir / "checkpoints").is_dir() else ""
        raise UserError(f"{run_dir} is not a finished cnnarena run: it has no model.json{hint}")
    return run_dir


def load_run_model(run_dir: Path) -> Classifier:
    """The best model of a finished run (model.json + model.safetensors)."""
    run_dir = check_run_dir(run_dir)  # before importing torch: a mistyped path fails in a blink
    from ..models.artefacts import load_model

    model = load_model(run_dir / "model")
    if model.meta.data_size[0] != model.meta.data_size[1]:  # decode_image makes square images only
        raise UserError(f"{run_dir}: model expects {model.meta.data_size} images; only square sizes are supported")
    return model


def collect_images(paths: Iterable[Path]) -> list[Path]:
    """Files as given (whatever their name: content decides), folders searched recursively for image files.

    Hidden files and folders are skipped, as when a dataset folder is listed for training.
    A path that does not exist is kept, so that it is reported like any unreadable file.
    """
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            found.append(path)
            continue
        for directory, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not is_hidden(d))  # pruned: never descended into
            found += [Path(directory) / f for f in sorted(files) if not is_hidden(f) and is_image_name(f)]
    return found


def to_chw(pixels: np.ndarray, in_chans: int) -> np.ndarray:
    """decode_image's H×W (gray) or H×W×3 array -> uint8 C×H×W with the model's channel count.

    Gray into an RGB model is repeated over the channels, as the dataset cache broadcasts it.
    """
    if pixels.ndim == 2:
        return np.repeat(pixels[None], in_chans, axis=0)
    if in_chans == 1:  # not reached when decoding with grayscale=True; kept for array callers
        raise ValueError("RGB pixels for a single-channel model: decode with grayscale=True")
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def decode_for(meta: ModelMeta, source: str | io.BytesIO) -> np.ndarray:
    """One file (path or in-memory bytes) as uint8 C×H×W, decoded the way the training data was."""
    pixels, _, _ = decode_image(source, meta.data_size[0], grayscale=meta.in_chans == 1)
    return to_chw(pixels, meta.in_chans)


def top_k(probs: np.ndarray, classes: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Per row of an N×K probability array: the k most likely (label, probability), best first."""
    k = max(1, min(k, probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(classes[j], float(row[j])) for j in idx] for row, idx in zip(probs, order, strict=True)]


def _chunks(items: list, size: int) -> Iterator[list]:
    for lo in range(0, len(items), size):
        yield items[lo:lo + size]


def predict_files(model: Classifier, paths: Iterable[Path], *, top: int = 5, batch_size: int = 64) -> list[Prediction]:
    """Top-`top` predictions for every image under `paths`, in batches; unreadable files get an error."""
    return predict_sources(model, [(str(p), str(p)) for p in collect_images(paths)], top=top, batch_size=batch_size)


def predict_sources(model: Classifier, sources: list[tuple[str, Any]], *, top: int = 5,
                    batch_size: int = 64) -> list[Prediction]:
    """Top-`top` predictions for (name, path or in-memory file) pairs, in batches; unreadable ones get an error."""
    import torch

    model.eval()
    meta = model.meta
    device = next(model.parameters()).device
    results: list[Prediction] = []
    for chunk in _chunks(sources, max(1, batch_size)):  # bounded memory for big folders
        decoded: list[np.ndarray] = []
        readable: list[Prediction] = []
        for name, source in chunk:
            row = Prediction(name)
            results.append(row)
            try:
                decoded.append(decode_for(meta, source))
                readable.append(row)
            except Unreadable as e:
                row.error = e.reason
        if decoded:
            x = torch.from_numpy(np.stack(decoded)).to(device).float().div_(255.0)
            with torch.inference_mode():
                probs = model(x).float().softmax(1).cpu().numpy()
            for row, best in zip(readable, top_k(probs, meta.classes, top), strict=True):
                row.top = best
    return results


def unreadable_summary(bad: list[Prediction], total: int, show: int = 3) -> str:
    """One line: how many of `total` files could not be read, and why for the first few."""
    if len(bad) == total == 1:
        return f"{bad[0].path} could not be read ({bad[0].error})"
    head = f"none of the {total} files could be read" if len(bad) == total else \
        f"{len(bad)} of {total} files could not be read"
    more = f"; and {len(bad) - show} more" if len(bad) > show else ""
    return f"{head}: " + "; ".join(f"{r.path} ({r.error})" for r in bad[:show]) + more


# ---- output formats -------------------------------------------------------------------------------

def format_table(rows: list[Prediction]) -> str:
    """Aligned text: one line per image, the top-k as `label probability` pairs."""
    if not rows:
        return "no images"
    width = max(len("image"), *(len(r.path) for r in rows))
    k = max((len(r.top) for r in rows), default=1)
    header = "  ".join(["image".ljust(width)] + [f"top-{i + 1}" for i in range(k)]) if k > 1 else \
        f"{'image'.ljust(width)}  prediction"
    lines = [header]
    for r in rows:
        cells = [f"error: {r.error}"] if r.error else [f"{label} {p:.3f}" for label, p in r.top]
        lines.append("  ".join([r.path.ljust(width), *cells]))
    return "\n".join(lines)


def format_csv(rows: list[Prediction]) -> str:
    """One row per image: path, error, label_1, probability_1, ... label_k, probability_k."""
    k = max((len(r.top) for r in rows), default=1)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "error"] + [f"{c}_{i + 1}" for i in range(k) for c in ("label", "probability")])
    for r in rows:
        cells: list[str] = []
        for label, p in r.top:
            cells += [label, f"{p:.6f}"]
        w.writerow([r.path, r.error or "", *cells, *[""] * (2 * k - len(cells))])
    return buf.getvalue()


def format_json(rows: list[Prediction]) -> str:
    return json.dumps([r.to_json() for r in rows], indent=1)


FORMATS = {"table": format_table, "csv": format_csv, "json": format_json}


def render(rows: list[Prediction], fmt: str) -> str:
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    return FORMATS[fmt](rows)
