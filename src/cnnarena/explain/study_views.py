"""The study report's "Where each model looks" and "What each model confuses": the same test images under every
model's heat map, the most-confused class pairs, and the images the models disagree on.

Every map explains the class that model predicts (Grad-CAM at the layer `pick_layer` chooses); the predictions and
confidences shown are those of the runs' predictions.csv (the test evaluation the comparison table reports).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import rundir
from .cam import explain
from .figures import Cell, grid_figure, overlay, plain

METHOD = "gradcam"
CLASS_IMAGES_MAX = 12
MISTAKES_PER_MODEL = 3
DISAGREEMENTS_SHOWN = 8
PAIRS_PER_MODEL = 5


@dataclass(frozen=True)
class Predicted:
    label: int
    confidence: float
    correct: bool


def read_predictions(run_dir: Path, classes: list[str]) -> dict[str, Predicted]:
    with open(Path(run_dir) / rundir.PREDICTIONS, newline="") as f:
        return {row["id"]: Predicted(classes.index(row["predicted"]), float(row["confidence"]), row["correct"] == "1")
                for row in csv.DictReader(f)}


def confused_pairs(predictions: dict[str, Predicted], labels: dict[str, int], classes: list[str],
                   top: int = PAIRS_PER_MODEL) -> list[dict[str, Any]]:
    """The most frequent (true, predicted) mistakes; share = of that true class's test images."""
    totals = Counter(labels.values())
    pairs = Counter((labels[i], p.label) for i, p in predictions.items() if not p.correct)
    return [{"true": classes[t], "predicted": classes[p], "count": n, "share": round(n / totals[t], 4)}
            for (t, p), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def _class_examples(labels: list[int], n_classes: int) -> list[int]:
    per_class = 2 if n_classes <= CLASS_IMAGES_MAX // 2 else 1
    chosen: list[int] = []
    for c in range(n_classes):
        chosen += [i for i, y in enumerate(labels) if y == c][:per_class]
    return chosen[:CLASS_IMAGES_MAX]


def study_explanations(models: dict[str, Any], test, run_dirs: dict[str, Path], out: Path) -> dict[str, Any]:
    """models: name -> Classifier as trained; test: the study's test ImageSet. Writes two grids under `out`."""
    classes = test.classes
    index = {sid: i for i, sid in enumerate(test.ids)}
    labels = {sid: int(y) for sid, y in zip(test.ids, test.labels.tolist(), strict=True)}
    predictions = {m: read_predictions(run_dirs[m], classes) for m in models}

    where_rows = _class_examples(test.labels.tolist(), len(classes))
    why = {i: "class example" for i in where_rows}
    for m, preds in predictions.items():
        wrong = sorted((p.confidence, sid) for sid, p in preds.items() if not p.correct and sid in index)[::-1]
        for _, sid in wrong[:MISTAKES_PER_MODEL]:
            if index[sid] not in why:
                why[index[sid]] = f"{m}'s confident mistake"
                where_rows.append(index[sid])

    names = list(models)
    disagree = [sid for sid in test.ids
                if len({predictions[m][sid].correct for m in names if sid in predictions[m]}) > 1]
    # most telling first: where the wrong model was surest
    disagree.sort(key=lambda sid: -max(predictions[m][sid].confidence for m in names
                                       if not predictions[m][sid].correct))
    disagree_rows = [index[sid] for sid in disagree[:DISAGREEMENTS_SHOWN]]

    needed = sorted(set(where_rows) | set(disagree_rows))
    images = test.images[torch.tensor(needed, dtype=torch.long)] if needed else test.images[:0]
    position = {row: k for k, row in enumerate(needed)}
    heat, layers = {}, {}
    for m, model in models.items():
        model.eval()
        result = explain(model, images, method=METHOD)
        heat[m], layers[m] = result.heat, result.layer

    def grid(rows: list[int], path: Path, reasons: dict[int, str] | None = None) -> str | None:
        if not rows:
            return None
        cells = []
        for row in rows:
            pixels = test.images[row].numpy()
            sid = test.ids[row]
            line = [Cell(plain(pixels), f"true: {classes[labels[sid]]}")]
            for m in names:
                p = predictions[m][sid]
                line.append(Cell(overlay(pixels, heat[m][position[row]]),
                                 f"{classes[p.label]} {p.confidence:.0%}", p.correct))
            cells.append(line)
        labels_left = [reasons.get(r, "") for r in rows] if reasons else None
        return str(grid_figure(cells, ["input", *names], path, row_labels=labels_left))

    return {
        "method": METHOD, "layers": layers,
        "where_png": grid(where_rows, out / "where_each_model_looks.png", why),
        "where_count": len(where_rows),
        "confusions": {m: confused_pairs(predictions[m], labels, classes) for m in names},
        "disagreements": len(disagree), "test_images": len(test.ids),
        "disagreements_png": grid(disagree_rows, out / "disagreements.png"),
        "disagreements_shown": len(disagree_rows),
    }

