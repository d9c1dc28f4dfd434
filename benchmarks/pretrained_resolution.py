"""Which resolution should a pretrained backbone run at on small images? Accuracy and time per input size.

  python -m benchmarks.pretrained_resolution                      # Fashion-MNIST (28 px) and digits (8 px)
  python -m benchmarks.pretrained_resolution --sizes 32,64 --data digits

Every row is one `cnnarena train` of EfficientNet-Lite0 with its default recipe (2 frozen + 3 fine-tuning epochs),
the same split and seed; only --input-size differs. Fashion-MNIST trains on a tenth of its training set (4,800
images, 3,000 validation) so that a row takes minutes. Peak RSS is the child's. Figures go to
benchmarks/results/pretrained_resolution.json; the rule in models/resolution.py is chosen from them.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import machine

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"fashion-mnist": ["--fraction", "0.1", "--val-frac", "0.05"], "digits": []}


def run(data: str, size: int, work: Path) -> dict:
    out = work / f"{data}-{size}"
    cmd = [sys.executable, "-m", "cnnarena", "train", data, "--model", "efficientnet_lite0", "--input-size", str(size),
           "--out", str(out), *DATASETS[data]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far: rows grow in size
    m = json.loads((out / "metrics.json").read_text())
    return {"data": data, "input_size": size, "test_accuracy": m["test_accuracy"], "train_seconds": m["train_seconds"],
            "wall_seconds": round(wall, 1), "peak_rss_gb_upper_bound": round(max(peak, before) / 2**20, 2),
            "train_samples": m["train_samples"], "epochs": m["epochs_run"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="32,48,64,80")
    p.add_argument("--data", default="fashion-mnist,digits")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                rows.append(run(data, size, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    result = {"machine": machine(),
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    path = ROOT / "benchmarks" / "results" / "pretrained_resolution.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
