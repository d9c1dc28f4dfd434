"""Images/s of ONNX models in ONNX Runtime, and the intra-op thread count each runs fastest with at each batch size.

ONNX Runtime's default gives a session one thread per physical core. Small int8 graphs at batch 1 run faster on one
thread: each operator is a few microseconds of work, and handing half of it to a second thread costs more than it
saves. So each model is timed with the default and with one thread, at each batch size, and the card records the
faster setting (`intra_op_threads`); `serve` applies it per batch (threads_for_batch). The timing runs with ONNX
Runtime's default of idle threads spinning; serve turns spinning off, which favours one thread further (a sleeping
second thread is slower to wake), so the choice holds there and serve's default-thread batches run a little slower
than the card says.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from .onnx import INPUT_NAME, OUTPUT_NAME

SPEED_BATCHES = (1, 64)
DEFAULT_THREADS = 0  # ONNX Runtime's own choice: one thread per physical core
THREAD_CHOICES = (DEFAULT_THREADS, 1)


def session(path: Path, threads: int = DEFAULT_THREADS, spinning: bool = True):
    """An ONNX Runtime CPU session of the model at `path` with `threads` intra-op threads (0: ONNX Runtime's
    default). spinning=False stops idle threads busy-waiting, for processes that need the cores for other work."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def images_per_second(model_session, sample: np.ndarray, batch: int, seconds: float) -> float:
    """Sustained images/s at `batch`, after a warm-up run, over at least `seconds` (and three runs)."""
    x = np.ascontiguousarray(np.resize(sample, (batch, *sample.shape[1:])))
    model_session.run([OUTPUT_NAME], {INPUT_NAME: x})
    runs, t0 = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - t0 < seconds:
        model_session.run([OUTPUT_NAME], {INPUT_NAME: x})
        runs += 1
    return runs * batch / (time.perf_counter() - t0)


def compare_speed(models: dict[str, Path], sample: np.ndarray, seconds: float, rounds: int = 3) -> dict[str, Any]:
    """Each model's images/s at each SPEED_BATCHES with each THREAD_CHOICES, measured in alternation (rounds ×
    seconds / rounds per model, batch size and thread count) and the best round kept, so a slow moment of the machine
    does not land on one model alone.

    Returns {"images_per_second": {model: {batch: best rate}}, "intra_op_threads": {model: {batch: threads of that
    rate}}, "by_threads": {model: {batch: {threads: rate}}}}, batch sizes and thread counts as strings (JSON keys)."""
    sessions = {(name, t): session(path, t) for name, path in models.items() for t in THREAD_CHOICES}
    by_threads: dict[str, dict[str, dict[str, float]]] = {name: {str(b): {} for b in SPEED_BATCHES} for name in models}
    for _ in range(rounds):
        for b in SPEED_BATCHES:
            for (name, t), model_session in sessions.items():
                rate = images_per_second(model_session, sample, b, seconds / rounds)
                rates = by_threads[name][str(b)]
                rates[str(t)] = round(max(rates.get(str(t), 0.0), rate), 1)
    best_threads = {name: {b: int(max(rates, key=rates.__getitem__)) for b, rates in per_batch.items()}
                    for name, per_batch in by_threads.items()}
    return {"images_per_second": {name: {b: by_threads[name][b][str(t)] for b, t in per_batch.items()}
                                  for name, per_batch in best_threads.items()},
            "intra_op_threads": best_threads, "by_threads": by_threads}


def threads_for_batch(batch: int, threads_by_batch: dict[str, int]) -> int:
    """The thread count measured best at the measured batch size nearest `batch` (on a log scale: with 1 and 64
    measured, batches up to 8 take batch 1's)."""
    nearest = min(threads_by_batch, key=lambda b: (abs(math.log(int(b)) - math.log(max(batch, 1))), int(b)))
    return int(threads_by_batch[nearest])


class SessionsByBatch:
    """Sessions of one model, one per thread count in `threads_by_batch` ({batch: threads}, as a card records it;
    empty: ONNX Runtime's default); for_batch(n) is the session for a batch of n."""

    def __init__(self, path: Path, threads_by_batch: dict[str, int], spinning: bool = True) -> None:
        self.threads_by_batch = {str(b): int(t) for b, t in threads_by_batch.items()} or {"1": DEFAULT_THREADS}
        self.sessions = {t: session(path, t, spinning=spinning) for t in sorted(set(self.threads_by_batch.values()))}

    def for_batch(self, batch: int):
        return self.sessions[threads_for_batch(batch, self.threads_by_batch)]
