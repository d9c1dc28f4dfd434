"""Trials per hour of `cnnarena tune` with 1 worker and with 2 workers sharing one Optuna study (SQLite file).

  python -m benchmarks.tune_workers                       # 8 trials of simple-2conv on digits, each way
  python -m benchmarks.tune_workers --data fashion-mnist --trials 6

Every trial does the same work (fixed epochs and batch size; the learning rate is searched; no pruning), so the
wall time to finish --trials trials compares the two set-ups. Workers are plain processes started with the same
command, as on several machines. Results: benchmarks/results/tune_workers.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import write_result

ROOT = Path(__file__).resolve().parents[1]


def sweep(workers: int, tmp: Path, args) -> float:
    space = tmp / "space.yaml"
    space.write_text(f"lr: {{low: 1.0e-3, high: 3.0e-2, log: true}}\nepochs: {args.epochs}\nbatch_size: 64\n"
                     "augment: none\n")
    out = tmp / f"w{workers}"
    command = [sys.executable, "-m", "cnnarena", "tune", args.data, "--model", args.model, "--trials",
               str(args.trials), "--space", str(space), "--pruner", "none", "--out", str(out)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(err[-2000:])
    seconds = time.perf_counter() - t0
    done = json.loads((out / "tune.json").read_text())["trials"]["complete"]
    return seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--model", default="simple-2conv")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tune_workers.json")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="cnnarena-tune-bench-") as tmp:
        for workers in (1, 2):
            seconds, done = sweep(workers, Path(tmp), args)
            rows[f"{workers} worker(s)"] = {"seconds": round(seconds, 1), "trials": done,
                                            "trials_per_hour": round(3600 * done / seconds)}
            print(workers, rows[f"{workers} worker(s)"], flush=True)
    one, two = rows.values()
    result = {"data": args.data, "model": args.model, "epochs": args.epochs, "rows": rows,
              "ratio_2_over_1": round(two["trials_per_hour"] / one["trials_per_hour"], 2),
}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
