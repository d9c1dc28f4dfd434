"""Thread count chosen by measurement while training on a CPU.

PyTorch splits every op across all its threads and waits at a barrier after each. When another program keeps
a core busy, each barrier waits for a thread the scheduler has set aside, and two threads run *slower* than
one: simple-2conv at batch 32 on this 2-core machine with one busy process beside it did 258-699 img/s on two
threads, and 1,520-1,630 with this tuner; on digits at batch 8, 209 against 3,667 on one thread. On an idle
machine two threads are ~1.5x faster. So the training loop measures both now and then and keeps the faster.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch

from ..runtime import settings

if TYPE_CHECKING:
    from .loop import TrainState

log = logging.getLogger(__name__)

WINDOW_SECONDS = 0.3  # one measurement: long enough to span scheduler time slices
WINDOW_STEPS = 3  # and this many steps at least: one slow step (a backbone's, ~0.4 s) is a single noisy sample
FIRST_RECHECK, LAST_RECHECK = 30.0, 240.0  # seconds between probes: doubling while the choice holds
MARGIN = 1.1  # fewer threads must be this much faster to win (noise should not cost an idle machine its cores)
SLOWDOWN = 0.7  # a window this much slower than the choice's probe means the load changed: probe now


class ThreadChooser:
    """Which thread count to run next, from the images/s measured at each candidate."""

    def __init__(self, most: int) -> None:
        self.candidates = [most, 1] if most < 4 else [most, most // 2, 1]
        self.rates: dict[int, float] = {}
        self.best = most
        self.probing = False
        self.probed_at = -float("inf")
        self.interval = FIRST_RECHECK

    def due(self, now: float, rate: float) -> bool:
        """Time for a probe: the interval passed, or the current choice got much slower than it measured."""
        slowed = self.best in self.rates and rate < SLOWDOWN * self.rates[self.best]
        return slowed or now - self.probed_at >= self.interval

    def start_probe(self, now: float) -> None:
        self.rates, self.probed_at, self.probing = {}, now, True

    def pending(self) -> int | None:
        """The next candidate to measure in the probe under way, or None when no probe is under way."""
        return next((n for n in self.candidates if n not in self.rates), None) if self.probing else None

    def record(self, threads: int, images_per_second: float) -> None:
        self.rates[threads] = images_per_second
        if len(self.rates) == len(self.candidates):
            self.probing = False
            best = self.candidates[0]
            for n in self.candidates[1:]:
                if self.rates[n] > MARGIN * self.rates[best]:
                    best = n
            # all threads, confirmed again: checked less and less often (a load that arrives slows the choice
            # down, which `due` notices at once). Fewer threads: checked often, since a load that leaves does not
            # slow them down; the machine should get its cores back soon.
            holds = best == self.best == self.candidates[0]
            self.interval = min(2 * self.interval, LAST_RECHECK) if holds else FIRST_RECHECK
            self.best = best


_CHOOSERS: dict[int, ThreadChooser] = {}  # per process: fit() after fit() (a study, a benchmark) reuses the choice


class ThreadTuner:
    """Called after every training step: measures windows of steps, probes the candidates when due, and trains
    at the fastest. A perf_counter() call per step when not at a window's end."""

    def __init__(self, most: int, clock=time.perf_counter) -> None:
        self.most = most
        self.clock = clock
        self.chooser = _CHOOSERS.setdefault(most, ThreadChooser(most))
        self.measuring: int | None = None
        self.mark: tuple[float, int, int] | None = None  # (time, images seen, epoch) at the window's start
        self.steps = 0  # steps since the window's start

    @staticmethod
    def wanted(deterministic: bool) -> bool:
        """Only when the caller opted in (runtime.configure(tune_threads=True): the CLI does, unless
        CNNARENA_THREAD_TUNING=0), on several threads, and not when results must repeat bit for bit."""
        return settings().tune_threads and torch.get_num_threads() > 1 and not deterministic

    def begin(self) -> None:
        torch.set_num_threads(self.chooser.best)
        self.mark, self.measuring = None, None

    def end(self) -> None:
        torch.set_num_threads(self.most)

    def after_step(self, s: TrainState) -> None:
        now = self.clock()
        mark = self.mark
        seen = s.progress.seen
        if mark is None or mark[2] != s.epoch or seen < mark[1]:
            self.mark, self.steps = (now, seen, s.epoch), 0  # warm-up steps and epoch boundaries: unmeasured
            return
        self.steps += 1
        seconds = now - mark[0]
        if seconds < WINDOW_SECONDS or self.steps < WINDOW_STEPS:
            return
        rate = (seen - mark[1]) / seconds
        chooser = self.chooser
        if self.measuring is not None:
            before = chooser.best
            chooser.record(self.measuring, rate)
            self.measuring = None
            if chooser.pending() is None and chooser.best != before:
                rates = ", ".join(f"{n}: {r:,.0f} img/s" for n, r in chooser.rates.items())
                log.info(f"epoch {s.epoch + 1}: training on {chooser.best} of {self.most} threads ({rates})")
        elif chooser.due(now, rate):
            chooser.start_probe(now)
        self.measuring = chooser.pending()
        torch.set_num_threads(self.measuring or chooser.best)
        self.mark, self.steps = (now, seen, s.epoch), 0
