"""torchrun data parallelism on this machine: 2 processes (1 thread each, gloo) against 1 process (2 threads).

  python -m benchmarks.ddp_speed                 # `fast` on a quarter of Fashion-MNIST, 3 epochs, 2 rounds
  python -m benchmarks.ddp_speed --model simple-2conv --fraction 0.5

The same command line (global batch, epochs, seed) runs both ways, alternating round by round, each in a fresh
run directory; training seconds come from the run's metrics.json (data loading and evaluation excluded), wall
seconds include process start-up. Results: benchmarks/results/ddp_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import write_result

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], out: Path, env: dict) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall": time.perf_counter() - t0, "train": metrics["train_seconds"], "acc": metrics["test_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--model", default="fast")
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ddp_speed.json")
    args = parser.parse_args()
    train = ["train", args.data, "--model", args.model, "--fraction", str(args.fraction), "--epochs",
             str(args.epochs), "--batch-size", str(args.batch_size), "--seed", "0"]
    ways = {"1 process, 2 threads": ([sys.executable, "-m", "cnnarena", *train], {}),
            "torchrun, 2 processes x 1 thread": ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                                  "2", "-m", "cnnarena", *train], {"OMP_NUM_THREADS": "1"})}
    results: dict[str, list[dict]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory(prefix="cnnarena-ddp-bench-") as tmp:
        for r in range(args.rounds):
            for i, (way, (command, extra)) in enumerate(ways.items()):
                results[way].append(run(command, Path(tmp) / f"{r}-{i}", {**os.environ, **extra}))
                print(f"round {r + 1}: {way}: {results[way][-1]}", flush=True)
    summary = {way: {k: round(statistics.median(x[k] for x in rs), 3) for k in ("wall", "train", "acc")}
               for way, rs in results.items()}
    one, two = summary.values()
    result = {"command": " ".join(train), "rounds": args.rounds, "median": summary,
              "speed_up_training": round(one["train"] / two["train"], 2),
              "speed_up_wall": round(one["wall"] / two["wall"], 2),
}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
