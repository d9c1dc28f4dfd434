"""Thread count chosen by measurement while training on a CPU.

PyTorch splits every op across all its threads and waits at a barrier after each. When another program keeps
a core busy, each barrier waits for a thread the scheduler has set aside, and two threads run *slower* than
one: simple-2conv at batch 32 on this 2-core machine with one busy process beside it did 314 img/s on two
threads and 732 on one; on digits at batch 8, 209 against 3,667. On an idle machine two threads are ~1.5x
faster. So the training loop measures both now and then and keeps the faster.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import torch

from .callbacks import Callback

if TYPE_CHECKING:
    from .loop import TrainState

WINDOW_SECONDS = 0.3  # one measurement: long enough to span scheduler time slices
RECHECK_SECONDS = 30.0  # load changes: measure the alternatives again this often
MARGIN = 1.1  # fewer threads must be this much faster to win (noise should not cost an idle machine its cores)


class ThreadChooser:
    """Which thread count to run next, from the images/s measured at each candidate."""

    def __init__(self, most: int) -> None:
        self.candidates = [most, 1] if most < 4 else [most, most // 2, 1]
        self.rates: dict[int, float] = {}
        self.best = most
        self.probed_at = -float("inf")

    def due(self, now: float) -> bool:
        return now - self.probed_at >= RECHECK_SECONDS

    def start_probe(self, now: float) -> None:
        self.rates, self.probed_at = {}, now

    def pending(self) -> int | None:
        """The next candidate still to measure in this probe, or None when all are measured."""
        return next((n for n in self.candidates if n not in self.rates), None)

    def record(self, threads: int, images_per_second: float) -> None:
        self.rates[threads] = images_per_second
        if self.pending() is None:
            best = self.candidates[0]
            for n in self.candidates[1:]:
                if self.rates[n] > MARGIN * self.rates[best]:
                    best = n
            self.best = best


_CHOOSERS: dict[int, ThreadChooser] = {}  # per process: fit() after fit() (a study, a benchmark) reuses the choice


class ThreadTuner(Callback):
    """Measures windows of batches at each candidate thread count, then trains at the fastest."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.chooser = _CHOOSERS.setdefault(most, ThreadChooser(most))
        self.measuring: int | None = None
        self.mark: tuple[float, int, int] | None = None  # (time, images seen, epoch) at the window's start

    @staticmethod
    def wanted(deterministic: bool) -> bool:
        """Only on several threads, not when results must repeat bit for bit, and not when the user opted out."""
        return (torch.get_num_threads() > 1 and not deterministic
                and os.environ.get("CNNARENA_THREAD_TUNING", "1") != "0")

    def on_train_begin(self, s: TrainState) -> None:
        torch.set_num_threads(self.chooser.best)
        self.mark = None

    def on_batch_end(self, s: TrainState, batch: int, num_batches: int) -> None:
        now = time.perf_counter()
        if self.mark is None or self.mark[2] != s.epoch or s.epoch_seen < self.mark[1]:
            self._restart(now, s)  # the first batches (warm-up) and epoch boundaries (validation) are not measured
            return
        seconds = now - self.mark[0]
        if seconds < WINDOW_SECONDS:
            return
        if self.measuring is not None:
            before = self.chooser.best
            self.chooser.record(self.measuring, (s.epoch_seen - self.mark[1]) / seconds)
            self.measuring = None
            if self.chooser.pending() is None:
                torch.set_num_threads(self.chooser.best)
                if self.chooser.best != before:
                    rates = ", ".join(f"{n}: {r:,.0f} img/s" for n, r in self.chooser.rates.items())
                    s.log(f"epoch {s.epoch + 1}: training on {self.chooser.best} of {self.most} threads ({rates})")
        elif self.chooser.due(now):
            self.chooser.start_probe(now)
        nxt = self.chooser.pending() if self.chooser.probed_at == now or self.chooser.rates else None
        if nxt is not None:
            self.measuring = nxt
            torch.set_num_threads(nxt)
        self._restart(now, s)

    def _restart(self, now: float, s: TrainState) -> None:
        self.mark = (now, s.epoch_seen, s.epoch)

    def on_train_end(self, s: TrainState) -> None:
        torch.set_num_threads(self.most)
