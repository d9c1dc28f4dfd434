"""`cnnarena doctor`: what is wrong in a dataset, before any verdict is trusted (cleanlab/cleanvision style).

One JSON-ready report of findings:
- files: unreadable (the loader's reasons), unusual modes (CMYK, 16-bit, palette, alpha), EXIF-rotated, size and
  aspect-ratio outliers (file sources);
- classes: counts, the imbalance ratio, near-empty classes;
- duplicates: exact (same decoded pixels) and near (duplicates.py), within a class, across classes (a label
  conflict), and, given a split, across train / validation / test (leakage), counted per pair of splits;
- label issues: images whose out-of-sample predictions disagree with their given label (label_issues.py).
`serious` lists what --strict fails on: leakage, label conflicts, unreadable files.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from . import duplicates
from .dataset import ImageSet, Source
from .duplicate_cache import cached_near_pairs, remember
from .inspect import describe

NEAR_EMPTY_SHARE = 0.1  # of the median class: a class this small cannot be learnt or measured well
NEAR_EMPTY_MIN = 10
SIZE_OUTLIER = 4.0  # area this many times smaller or larger than the median image
ASPECT_OUTLIER = 2.0  # width/height this many times off the median
UNUSUAL_MODES = {"CMYK": "CMYK", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit integer",
                 "F": "32-bit float", "P": "palette", "PA": "palette with alpha", "RGBA": "alpha", "LA": "alpha",
                 "1": "1-bit", "YCbCr": "YCbCr", "LAB": "LAB", "HSV": "HSV"}
SPLITS = ("train", "val", "test")
LABEL_MODELS = ("auto", "backbone", "pixels")
AUTO_BACKBONE_IMAGES = 10_000


def all_images(source: Source) -> tuple[ImageSet, list[str]]:
    """Pool and official test set as one set, and which part each image came from ("pool" / "test")."""
    if source.test is None:
        return source.pool, ["pool"] * len(source.pool)
    both = ImageSet(torch.cat([source.pool.images, source.test.images]),
                    torch.cat([source.pool.labels, source.test.labels]), source.classes,
                    [*source.pool.ids, *source.test.ids])
    return both, ["pool"] * len(source.pool) + ["test"] * len(source.test)


def examine(source: Source, *, split_ids: dict[str, list[str]] | None = None, root: Path | None = None,
            label_issues: bool = True, near: bool = True, near_threshold: float = duplicates.NEAR_THRESHOLD,
            folds: int = 5, seed: int = 0, label_model: str = "auto",
            embed: Callable[[torch.Tensor], np.ndarray] | None = None, embed_name: str = "") -> dict[str, Any]:
    """The whole report. split_ids: ids per split (a split.json) to count leakage across; root: where the files
    of a folder/CSV source are, for the per-file checks; embed: a pretrained backbone's features of images (the
    label issues' inputs: see label_model_choice), named embed_name."""
    data, parts = all_images(source)
    desc = describe(source)
    counts = desc["counts"]["total"]
    report: dict[str, Any] = {
        "dataset": {"name": source.name, "root": str(root) if root is not None else None,  # ids are relative to it
                    "images": len(data), "classes": list(source.classes),
                    "counts": dict(zip(source.classes, counts, strict=True)),
                    "imbalance_ratio": _finite(desc["imbalance_ratio"]),
                    "near_empty_classes": near_empty(source.classes, counts)},
        "unreadable": [{"path": p, "reason": r} for p, r in source.skipped],
        "files": file_findings(root, data.ids, source.original_sizes) if root is not None else None,
    }
    near_ok = duplicates.near_search_applies(source.original_sizes)
    searched, train_searches = near and near_ok, source.root is not None and near_ok  # as data/health.check decides
    report["duplicates"] = duplicate_findings(data, split_ids, near=searched, near_threshold=near_threshold,
                                              reusable=source.test is None and searched == train_searches)
    if near and not near_ok:
        report["duplicates"]["method"] += (f" (near-duplicates not searched: images under "
                                           f"{duplicates.NEAR_MIN_SIDE} px hold too little detail to tell a copy "
                                           "from a look-alike)")
    report["label_issues"], report["label_issues_model"], features = (
        _label_issues(data, source.classes, folds, seed, label_model, embed, embed_name) if label_issues
        else (None, None, None))
    report["outliers"] = _outliers(data, source.classes, features) if features is not None else None
    report["serious"] = serious(report)
    return report


def label_model_choice(label_model: str, images: int, embed, colour: bool) -> str:
    """"backbone" or "pixels". auto takes the backbone for colour images, up to AUTO_BACKBONE_IMAGES (its features
    cost about 6 ms an image on 2 cores), where a pixel model sees colour blobs; for grayscale digits and clothing
    the pixel model found as many flipped labels (docs/measurements.md, "Label issues")."""
    if label_model not in LABEL_MODELS:
        raise UserError(f"unknown --label-model {label_model!r}: use {', '.join(LABEL_MODELS)}")
    if label_model == "auto":
        return "backbone" if embed is not None and colour and images <= AUTO_BACKBONE_IMAGES else "pixels"
    return label_model


def _label_issues(data, classes: list[str], folds: int, seed: int, label_model: str, embed,
                  embed_name: str) -> tuple[list[dict], str, np.ndarray | None]:
    """(issues, the model that found them, the backbone's features when they were used)."""
    from .feature_cache import cached_features
    from .label_issues import FEATURE_SIDE, find_label_issues

    colour = data.images.shape[1] == 3
    chosen = label_model_choice(label_model, len(data), embed, colour)
    given, method = None, f"the images at {FEATURE_SIDE}x{FEATURE_SIDE} pixels"
    if chosen == "backbone":
        try:
            given, method = cached_features(data.images, embed_name, embed), embed_name
        except UserError as e:  # no weights here: the pixel model, said so
            if label_model == "backbone":
                raise
            method += f" ({e})"
    elif label_model == "auto" and embed is not None:
        why = "grayscale images" if not colour else f"over {AUTO_BACKBONE_IMAGES:,} images"
        method += f" ({why}: --label-model backbone takes the pretrained backbone's features)"
    issues, _ = find_label_issues(data.images, data.labels.numpy(), folds=folds, seed=seed, given=given)
    rows = [{"id": data.ids[i.index], "given": classes[i.given], "likely": classes[i.likely],
             "given_probability": i.given_probability, "likely_probability": i.likely_probability} for i in issues]
    return rows, f"{folds}-fold logistic regression on {method}, then cleanlab", given


def _outliers(data, classes: list[str], features: np.ndarray) -> list[dict]:
    from .outliers import unlike_their_class

    labels = data.labels.numpy()
    return [{"id": data.ids[i], "class": classes[labels[i]], "score": round(score, 4), "z": round(z, 2)}
            for i, score, z in unlike_their_class(features, labels)]


def near_empty(classes: list[str], counts: list[int]) -> list[str]:
    median = float(np.median(counts)) if counts else 0.0
    return [c for c, n in zip(classes, counts, strict=True)
            if n < NEAR_EMPTY_MIN or n < NEAR_EMPTY_SHARE * median]


def _finite(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None


def file_findings(root: Path, ids: list[str], sizes: list[tuple[int, int]] | None) -> dict[str, Any]:
    """Modes and EXIF orientation from each file's header (nothing decoded), and size/aspect outliers."""
    from PIL import Image, UnidentifiedImageError

    modes, rotated = [], []
    for image_id in ids:
        try:
            with Image.open(root / image_id) as im:
                if im.mode in UNUSUAL_MODES or "transparency" in im.info:
                    modes.append({"id": image_id, "mode": im.mode,
                                  "what": UNUSUAL_MODES.get(im.mode, "transparency")})
                orientation = im.getexif().get(0x0112, 1)
                if orientation not in (0, 1):
                    rotated.append({"id": image_id, "orientation": int(orientation)})
        except (OSError, UnidentifiedImageError, ValueError):
            continue  # unreadable files are reported by the loader already
    outliers = []
    if sizes:
        hw = np.asarray(sizes[:len(ids)], dtype=np.float64)
        area, aspect = hw[:, 0] * hw[:, 1], hw[:, 1] / np.maximum(hw[:, 0], 1)
        med_area, med_aspect = np.median(area), np.median(aspect)
        for k, image_id in enumerate(ids[:len(hw)]):
            why = []
            if area[k] * SIZE_OUTLIER < med_area or area[k] > SIZE_OUTLIER * med_area:
                why.append("size")
            if aspect[k] * ASPECT_OUTLIER < med_aspect or aspect[k] > ASPECT_OUTLIER * med_aspect:
                why.append("aspect ratio")
            if why:
                outliers.append({"id": image_id, "height": int(hw[k, 0]), "width": int(hw[k, 1]),
                                 "why": " and ".join(why)})
    return {"unusual_modes": modes, "exif_rotated": rotated, "size_outliers": outliers}


def duplicate_findings(data: ImageSet, split_ids: dict[str, list[str]] | None, *, near: bool = True,
                       near_threshold: float = duplicates.NEAR_THRESHOLD, reusable: bool = False) -> dict:
    """reusable: `data` is the pool a new split is cut from, searched as `train` would search it."""
    exact = duplicates.exact_pairs(data.images)
    near_found, capped = cached_near_pairs(data.images, {(p.a, p.b) for p in exact}, near_threshold) \
        if near else ([], False)
    where = {}
    for name in SPLITS:
        for image_id in (split_ids or {}).get(name, ()):
            where[image_id] = name
    labels = data.labels.tolist()
    rows = []
    for p in [*exact, *near_found]:
        a, b = data.ids[p.a], data.ids[p.b]
        rows.append({"a": a, "b": b, "kind": p.kind, "similarity": p.similarity,
                     "label_a": data.classes[labels[p.a]], "label_b": data.classes[labels[p.b]],
                     "split_a": where.get(a), "split_b": where.get(b)})
    leakage = Counter()
    for r in rows:
        if r["split_a"] and r["split_b"] and r["split_a"] != r["split_b"]:
            leakage["-".join(sorted((r["split_a"], r["split_b"]), key=SPLITS.index))] += 1
    groups = duplicates.groups(len(data), [*exact, *near_found])
    if reusable and near_threshold == duplicates.NEAR_THRESHOLD:  # what train's split would search for: kept
        remember(data.images, near=near, groups=groups, exact=len(exact), found=len(near_found))
    return {
        "pairs": rows,
        "groups": [[data.ids[i] for i in g] for g in groups],
        "exact_within_class": sum(r["kind"] == "exact" and r["label_a"] == r["label_b"] for r in rows),
        "exact_across_classes": sum(r["kind"] == "exact" and r["label_a"] != r["label_b"] for r in rows),
        "near_within_class": sum(r["kind"] == "near" and r["label_a"] == r["label_b"] for r in rows),
        "near_across_classes": sum(r["kind"] == "near" and r["label_a"] != r["label_b"] for r in rows),
        "leakage": dict(leakage) if split_ids is not None else None,
        "near_search_capped": capped,
        "method": (f"exact: identical decoded pixels; near: each image's {duplicates.NEIGHBOURS} nearest in pHash "
                   f"(within {duplicates.PHASH_CANDIDATE_BITS} bits) and in thumbnails, "
                   f"confirmed as the same picture by ECC alignment (correlation >= "
                   f"{near_threshold}, edges, a crop's warp, colours)") if near else "exact only",
    }


def serious(report: dict[str, Any]) -> list[str]:
    found = []
    if report["unreadable"]:
        found.append(f"{len(report['unreadable'])} unreadable file(s)")
    dup = report["duplicates"]
    conflicts = dup["exact_across_classes"] + dup["near_across_classes"]
    if conflicts:
        found.append(f"{conflicts} duplicate pair(s) filed under different classes (label conflicts)")
    if dup["leakage"]:
        found.append("leakage: " + ", ".join(f"{n} duplicate pair(s) across {k}" for k, n in dup["leakage"].items()))
    return found


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The console summary: one line per finding."""
    d, dup = report["dataset"], report["duplicates"]
    ratio = d["imbalance_ratio"]
    lines = [f"{d['name']}: {d['images']:,} images, {len(d['classes'])} classes, imbalance ratio "
             f"{ratio if ratio is not None else 'inf'}"
             + (f", near-empty: {', '.join(d['near_empty_classes'])}" if d["near_empty_classes"] else "")]
    lines.append(f"unreadable files: {len(report['unreadable'])}")
    files = report["files"]
    if files is not None:
        lines.append(f"unusual modes: {len(files['unusual_modes'])}, EXIF-rotated: {len(files['exif_rotated'])}, "
                     f"size/aspect outliers: {len(files['size_outliers'])}")
    lines.append(f"exact duplicates: {dup['exact_within_class']} pair(s) within a class, "
                 f"{dup['exact_across_classes']} across classes")
    lines.append(f"near-duplicates: {dup['near_within_class']} pair(s) within a class, "
                 f"{dup['near_across_classes']} across classes" + (" (search capped)" if dup["near_search_capped"]
                                                                    else ""))
    if dup["leakage"] is not None:
        leaks = ", ".join(f"{k}: {n}" for k, n in dup["leakage"].items()) or "none"
        lines.append(f"leakage across splits (duplicate pairs): {leaks}")
    if report["label_issues"] is not None:
        model = report.get("label_issues_model")  # absent from reports written before it was recorded
        lines.append(f"label issues: {len(report['label_issues'])} image(s) whose out-of-sample predictions "
                     f"disagree with their label" + (f" (from {model})" if model else ""))
    if report.get("outliers") is not None:
        lines.append(f"unusual images: {len(report['outliers'])} unlike the rest of their class (backbone features)")
    lines.append("serious: " + ("; ".join(report["serious"]) if report["serious"] else "nothing"))
    return lines
