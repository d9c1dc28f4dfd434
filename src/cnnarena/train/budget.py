"""A wall-clock budget for one training: how many epochs fit (so the LR schedule ends on time), and when to stop.

The first batches of the first epoch are the timing probe: from their step time, the steps per epoch and an
estimate of the validation pass, the planner sets the epochs that fit in what is left of the budget. After every
whole epoch it plans again from the median of the epochs' measured times (validation and checkpoints included; the
first epoch, which pays for warm-up, left out once there are others): one slow epoch on a busy machine does not
swing the schedule. A training that would still overrun (a slower machine, a noisy neighbour) stops between two
steps, early enough for one validation pass, and keeps its best weights so far. Time already spent before this
fit (fine-tuning's phase 1, a cache fill, the epochs before a resume) counts against the budget.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from .loop import TrainState

EVAL_COST = 0.4  # one image's validation forward pass, in training steps' time per image (forward ~1/3 of a step)


class TimeBudget:
    def __init__(self, state: TrainState, budget_seconds: float, *, spent_before: float, num_batches: int,
                 val_samples: int, fills: bool, first_of_run: bool) -> None:
        self.budget, self.fills, self.first_of_run = budget_seconds, fills, first_of_run
        self.start = time.perf_counter() - spent_before
        self.num_batches, self.val_samples = num_batches, val_samples
        self.probe_at = min(num_batches, max(3, math.ceil(num_batches / 20)))
        self.step_seconds: float | None = None
        self.batch_t0 = 0.0
        self.planned = state.planned_epochs is not None  # a resumed run starts from the epochs it planned
        self.epoch_times: list[float] = []

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.spent()

    def val_estimate(self, batch_size: int) -> float:
        return 0.0 if self.step_seconds is None else EVAL_COST * self.val_samples * self.step_seconds / batch_size

    def after_step(self, state: TrainState, batch: int) -> bool:
        """After batch `batch` (1-based) of an epoch; True: stop now, the budget is (nearly) used up."""
        if batch == 1:
            self.batch_t0 = time.perf_counter()  # the first step pays for allocation and warm-up: not timed
        elif self.step_seconds is None and (batch >= self.probe_at or batch == self.num_batches):
            self.step_seconds = (time.perf_counter() - self.batch_t0) / (batch - 1)
            if not self.planned:
                self._plan_from_probe(state, batch)
        if self.step_seconds is None and self.num_batches == 1:
            self.step_seconds = time.perf_counter() - self.batch_t0
        stop = self.left() < self.val_estimate(state.batch_size)
        if stop and self.first_of_run and state.epoch == 0:  # not even one epoch fits: nothing worth keeping
            per_step = self.spent() / batch
            self._too_small(state, self.num_batches * per_step + EVAL_COST * self.val_samples * per_step
                            / state.batch_size, per_step)
        return stop

    def _too_small(self, state: TrainState, epoch: float, per_step: float) -> None:
        raise UserError(f"--budget {state.cfg.budget}: one epoch of this model takes about {epoch:.0f} s here "
                        f"({self.num_batches} steps of {per_step:.2f} s + validation of {self.val_samples:,} "
                        f"images), more than the {self.budget:g} s budget")

    def _plan_from_probe(self, state: TrainState, batch: int) -> None:
        self.planned = True
        B = state.batch_size
        epoch = self.num_batches * self.step_seconds + self.val_estimate(B)
        rest_of_this = (self.num_batches - batch) * self.step_seconds + self.val_estimate(B)
        # clearly too small: say so now (a probe that caught a warm-up or a busy moment may be pessimistic, so a
        # close call is left to the deadline, which ends the first epoch with the same error if it does not fit)
        if self.first_of_run and state.epoch == 0 and rest_of_this > 2 * self.left():
            self._too_small(state, epoch, self.step_seconds)
        more = max(0, math.floor((self.left() - rest_of_this) / epoch))
        self._set_epochs(state, state.epoch + 1 + more)

    def after_epoch(self, state: TrainState, epoch_seconds: float) -> None:
        """After each whole epoch: the epochs that fit at the median epoch time so far."""
        self.epoch_times.append(epoch_seconds)
        times = self.epoch_times[1:] or self.epoch_times
        typical = statistics.median(times)
        if typical > 0:
            self._set_epochs(state, state.epoch + max(0, math.floor(self.left() / typical)))

    def _set_epochs(self, state: TrainState, epochs: int) -> None:
        epochs = max(state.epoch + (1 if state.epoch == 0 else 0), epochs)
        if not self.fills:  # fine-tuning's phase 1 keeps its own length when it fits
            epochs = min(epochs, state.cfg.epochs)
        state.planned_epochs = epochs
        state.cfg = dataclasses.replace(state.cfg, epochs=epochs)
        state.lr_ctl.cfg = state.cfg  # one-cycle and cosine anneal to the planned end
