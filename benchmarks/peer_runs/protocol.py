"""What every peer's run prints for the race (standard library only: each peer imports it from its own venv).

After each epoch a run prints one line `@@peer {"epoch": .., "test_accuracy": .., "eval_seconds": ..}` on
stdout. `eval_seconds` is the time of the test evaluation the race added; the orchestrator takes it out of the
clock, so every tool is timed on its own work. Arrays come from the .npz the orchestrator exported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

PREFIX = "@@peer "


def emit(epoch: int, test_accuracy: float, eval_seconds: float, **extra) -> None:
    line = {"epoch": epoch, "test_accuracy": round(float(test_accuracy), 5), "eval_seconds": round(eval_seconds, 3)}
    sys.stdout.write(PREFIX + json.dumps({**line, **extra}) + "\n")
    sys.stdout.flush()


class Stopwatch:
    """`with Stopwatch() as s: ...` then s.seconds."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def array_script_args() -> argparse.Namespace:
    """`SCRIPT DATA.npz --epochs 10 --batch-size 128`: what the array tools' scripts take."""
    p = argparse.ArgumentParser()
    p.add_argument("npz")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    return p.parse_args()
