"""A second `cnnarena doctor` on the same folder: what the cache saves.

  python -m benchmarks.doctor_rerun      # 1,500 colour PNGs, built once under --work

The folder: real digits (scikit-learn's), tinted with a random colour per image and upscaled to 64 px, 150 per
class, as colour PNGs; colour, so `--label-model auto` takes the pretrained backbone's features. The doctor runs
twice with a fresh CNNARENA_CACHE: the first decodes the folder and computes everything (the near-duplicate pairs,
the backbone's features, the label issues' out-of-sample probabilities); the second finds all three cached.
The figures go to benchmarks/results/doctor_rerun.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import write_result

ROOT = Path(__file__).resolve().parents[1]


def build(folder: Path, per_class: int, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits, rng = load_digits(), np.random.default_rng(seed)
    for label in range(10):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        for k in np.flatnonzero(digits.target == label)[:per_class]:
            gray = digits.images[k] / 16
            tint = rng.uniform(0.3, 1.0, size=3)
            rgb = (gray[..., None] * tint * 255).astype(np.uint8)
            Image.fromarray(rgb).resize((64, 64), Image.BILINEAR).save(folder / str(label) / f"{k:04d}.png")


def doctor(folder: Path, out: Path, cache: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnarena.cli", "doctor", str(folder), "--out", str(out)], check=True,
                   env={**os.environ, "CNNARENA_CACHE": str(cache)}, capture_output=True)
    return round(time.perf_counter() - t0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cnnarena-doctor-rerun")
    parser.add_argument("--per-class", type=int, default=150)
    args = parser.parse_args()
    folder = args.work / "tinted-digits"
    if not folder.exists():
        build(folder, args.per_class)
    with tempfile.TemporaryDirectory(prefix="cnnarena-doctor-rerun-") as tmp:
        cache = Path(tmp) / "cache"
        first = doctor(folder, Path(tmp) / "first", cache)
        second = doctor(folder, Path(tmp) / "second", cache)
        report = json.loads((Path(tmp) / "second" / "doctor.json").read_text())
    images = sum(1 for p in folder.rglob("*.png"))
    print(f"{images} images: first doctor {first} s, second {second} s")
    write_result({"what": "cnnarena doctor twice on one folder, a fresh cache (whole processes)", "images": images,
                  "first_seconds": first, "second_seconds": second,
                  "label_issues_model": report.get("label_issues_model")},
                 ROOT / "benchmarks" / "results" / "doctor_rerun.json")


if __name__ == "__main__":
    main()
