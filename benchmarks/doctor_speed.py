"""`cnnarena doctor` on a 5,000-image folder of real-size photos: wall time, and time per 1,000 images.

  python -m benchmarks.doctor_speed                # 5,000 photos, 256-512 px JPEG, built once under --work
  python -m benchmarks.doctor_speed --images 1000  # a quicker pass

Each photo is a 2x2 mosaic of four Fashion-MNIST images of one class, upscaled to a random side of 256-512 px and
saved as JPEG (quality 90); 2% are exact copies and 2% near copies (tests/dirty_data.py's kinds). The command runs
twice as a user would: cold (the folder is decoded into cnnarena's cache: a fresh CNNARENA_CACHE) and warm (cached).
The figures go to benchmarks/results/doctor_speed.json.
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

from benchmarks import machine

ROOT = Path(__file__).resolve().parents[1]


def build(folder: Path, images: int, seed: int = 0) -> dict:
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    import dirty_data

    tiles, labels, classes = dirty_data.real_images("fashion-mnist")
    rng = np.random.default_rng(seed)
    copies = images // 50
    per_class = -(-(images - 2 * copies) // len(classes))
    made = []
    for c, name in enumerate(classes):
        (folder / name.replace("/", "-")).mkdir(parents=True, exist_ok=True)
        pool = rng.permutation(np.flatnonzero(labels == c))
        for k in range(per_class):
            if len(made) >= images - 2 * copies:
                break
            photo = dirty_data.mosaic(tiles[pool[4 * k:4 * k + 4]], int(rng.integers(256, 513))).convert("RGB")
            path = folder / name.replace("/", "-") / f"p{k:04d}.jpg"
            photo.save(path, quality=90)
            made.append(path)
    from PIL import Image

    for k in range(copies):
        original = made[int(rng.integers(len(made)))]
        (original.parent / f"copy{k:04d}.jpg").write_bytes(original.read_bytes())
        kind = dirty_data.NEAR_KINDS[k % len(dirty_data.NEAR_KINDS)]
        dirty_data.near_copy(Image.open(original), kind).save(original.parent / f"near{k:04d}.jpg", quality=90)
    return {"images": len(made) + 2 * copies, "exact_copies": copies, "near_copies": copies}


def timed_doctor(folder: Path, cache: Path, out: Path) -> tuple[float, dict]:
    env = {**os.environ, "CNNARENA_CACHE": str(cache)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cnnarena", "doctor", str(folder), "--json", "--out", str(out)],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cnnarena-doctor-bench")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "doctor_speed.json")
    args = parser.parse_args()
    folder = args.work / f"photos-{args.images}"
    if not folder.exists():
        t0 = time.perf_counter()
        made = build(folder, args.images)
        print(f"built {made['images']} photos in {time.perf_counter() - t0:.0f} s: {folder}", file=sys.stderr)
    n = sum(1 for _ in folder.rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        cold, report = timed_doctor(folder, Path(tmp) / "cache", Path(tmp) / "doc")
        warm, _ = timed_doctor(folder, Path(tmp) / "cache", Path(tmp) / "doc")
    dup = report["duplicates"]
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "images": n,
        "cold_seconds": round(cold, 1), "warm_seconds": round(warm, 1),
        "cold_seconds_per_1000": round(1000 * cold / n, 1), "warm_seconds_per_1000": round(1000 * warm / n, 1),
        "exact_pairs": dup["exact_within_class"] + dup["exact_across_classes"],
        "near_pairs": dup["near_within_class"] + dup["near_across_classes"], "near_search_capped":
        dup["near_search_capped"], "label_issues": len(report["label_issues"] or []),
    }
    print(json.dumps(result, indent=1))
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
