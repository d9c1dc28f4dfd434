"""Issue 17's new-user case: a 1,800-image class folder of 32x32 images (9 classes), `cnnarena study FOLDER --models
simple-2conv,efficientnet_lite0` with defaults, then with `--budget 3m`: wall time, peak RSS, each model's accuracy.

  python -m benchmarks.small_folder_study

The folder is built once from real Fashion-MNIST images (the first 200 of each of classes 0-8, resized to 32x32,
RGB PNGs). Each study runs as its own `cnnarena` process; its peak RSS is the kernel's figure for that child
(os.wait4). Figures go to benchmarks/results/small_folder_study.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import machine

ROOT = Path(__file__).resolve().parents[1]


def build(folder: Path, per_class: int = 200, classes: int = 9) -> None:
    import numpy as np
    from PIL import Image

    from cnnarena.data.sources import load_source

    source = load_source("fashion-mnist")
    images, labels = source.pool.images[:, 0].numpy(), source.pool.labels.numpy()
    for c in range(classes):
        target = folder / source.classes[c].replace("/", "-")
        target.mkdir(parents=True, exist_ok=True)
        for k in np.flatnonzero(labels == c)[:per_class]:
            Image.fromarray(images[k]).convert("RGB").resize((32, 32), Image.BILINEAR).save(target / f"{k}.png")


def study(folder: Path, out: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "cnnarena", "study", str(folder), "--models", "simple-2conv,efficientnet_lite0",
           "--out", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(out.with_suffix(".log"), "w"))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: see {out.with_suffix('.log')}")
    comparison = json.loads((out / "comparison.json").read_text())
    return {"command": "cnnarena study FOLDER --models simple-2conv,efficientnet_lite0 " + " ".join(extra),
            "wall_seconds": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
            "models": {r["model"]: {"test_accuracy": round(r["accuracy"], 4), "train_seconds": r["train_seconds"],
                                    "epochs": r["epochs"]} for r in comparison["table"]},
            "verdict": comparison["verdict"]}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fmnist32"
        build(folder)
        rows = [study(folder, Path(tmp) / "defaults"), study(folder, Path(tmp) / "budget3m", "--budget", "3m")]
        for r in rows:
            print(json.dumps(r, indent=1), flush=True)
    result = {"machine": machine(),
              "date": time.strftime("%Y-%m-%d"), "targets": "defaults <= 300 s and <= 4 GB; --budget 3m <= 180 s "
              "plus evaluation", "rows": rows}
    path = ROOT / "benchmarks" / "results" / "small_folder_study.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
