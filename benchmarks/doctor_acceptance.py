"""Issue 34's acceptance folder: real handwritten digits at 32 px with copies and flipped labels injected, and what
`cnnarena doctor --json` names in it.

  python -m benchmarks.doctor_acceptance        # figures to benchmarks/results/doctor_acceptance.json

The folder: scikit-learn's 1,797 real digits, upscaled to 32 px PNGs, one folder per digit; 15 exact copies (the
same file again, in the same class), 15 near copies (benchmarks.near_duplicates' copies: JPEG quality 30-95, +-10%
resize, crop of up to 10% of each side, brightness +-20%) and 2% of the originals moved to another class folder (a
flipped label). The doctor runs as a user runs it, as a whole process with a fresh cache. The goals: every injected
copy named, at least half of the flipped labels named, at most 5% of the clean files named anywhere in the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import write_result
from benchmarks.near_duplicates import copy_of, digits

RESULTS = Path(__file__).resolve().parent / "results" / "doctor_acceptance.json"


def build(root: Path, seed: int = 0, copies: int = 15, flip_share: float = 0.02) -> dict[str, set[str]]:
    """The folder; returns the ids of each kind of injected file (the rest are clean)."""
    rng = np.random.default_rng(seed)
    images, labels = digits(1797, rng)
    order = rng.permutation(len(images))
    exact_of, near_of = order[:copies], order[copies:2 * copies]
    flipped = set(order[2 * copies:2 * copies + int(flip_share * len(images))].tolist())
    truth: dict[str, set[str]] = {"exact": set(), "near": set(), "flipped": set(), "originals_copied": set()}
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        filed = (label + int(rng.integers(1, 10))) % 10 if k in flipped else label
        (root / str(filed)).mkdir(parents=True, exist_ok=True)
        name = f"{filed}/{k:04d}.png"
        image.save(root / name)
        if k in flipped:
            truth["flipped"].add(name)
        if k in exact_of:
            image.save(root / f"{filed}/{k:04d}-again.png")
            truth["exact"].add(f"{filed}/{k:04d}-again.png")
            truth["originals_copied"].add(name)
        if k in near_of:
            copy_of(image, rng).save(root / f"{filed}/{k:04d}-copy.jpg")
            truth["near"].add(f"{filed}/{k:04d}-copy.jpg")
            truth["originals_copied"].add(name)
    return truth


def named(report: dict) -> dict[str, set[str]]:
    """Every id the report names, by finding."""
    pairs = report["duplicates"]["pairs"]
    files = report.get("files") or {}
    return {"pairs": {i for p in pairs for i in (p["a"], p["b"])},
            "label_issues": {r["id"] for r in report.get("label_issues") or []},
            "outliers": {r["id"] for r in report.get("outliers") or []},
            "files": {r["id"] for kind in ("unusual_modes", "exif_rotated", "size_outliers")
                      for r in files.get(kind, [])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnnarena-doctor-acceptance-") as tmp:
        root = Path(tmp) / "digits"
        truth = build(root)
        done = subprocess.run([sys.executable, "-m", "cnnarena.cli", "doctor", str(root), "--json", "--out",
                               str(Path(tmp) / "report")], capture_output=True, text=True, check=True,
                              env={**os.environ, "CNNARENA_CACHE": str(Path(tmp) / "cache")})
        report = json.loads(done.stdout)
        files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    found = named(report)
    everything = set().union(*found.values())
    copies = truth["exact"] | truth["near"]
    clean = files - copies - truth["flipped"] - truth["originals_copied"]
    result = {
        "what": "cnnarena doctor --json on 1,797 real digits at 32 px with injected copies and flipped labels",
        "files": len(files), "clean_files": len(clean),
        "exact_copies_named": f"{len(truth['exact'] & found['pairs'])}/{len(truth['exact'])}",
        "near_copies_named": f"{len(truth['near'] & found['pairs'])}/{len(truth['near'])}",
        "flipped_labels_named": f"{len(truth['flipped'] & found['label_issues'])}/{len(truth['flipped'])}",
        "clean_files_named": len(clean & everything),
        "clean_share_named": round(len(clean & everything) / len(clean), 4),
        "clean_named_by_finding": {k: len(clean & v) for k, v in found.items()},
        "label_issues_model": report.get("label_issues_model"),
        "goals": "every copy named; at least half the flipped labels; at most 5% of the clean files",
    }
    result["met"] = (len(truth["exact"] & found["pairs"]) == len(truth["exact"])
                     and len(truth["near"] & found["pairs"]) == len(truth["near"])
                     and len(truth["flipped"] & found["label_issues"]) >= len(truth["flipped"]) / 2
                     and result["clean_share_named"] <= 0.05)
    write_result(result, RESULTS)


if __name__ == "__main__":
    main()
