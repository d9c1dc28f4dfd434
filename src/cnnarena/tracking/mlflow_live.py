"""A training callback that logs each epoch to MLflow as it ends, so `mlflow ui` shows the curves while the run
trains; the run directory's MLflow run is opened (or carried on after a resume) when each fit begins, and completed
by mlflow_log.log_run once the run has finished.

The logging happens on a thread of its own, in order, so a slow or unreachable tracking server (MLflow retries a
request for minutes) never holds an epoch up. A store that fails costs a warning, not the training: live logging
stops there, and log_run logs the epochs it missed. Each fit waits at its end until its epochs are logged: the
run's metrics.json, which lets log_run (in this process or another worker's) complete the MLflow run, is written
after that, so log_run never logs beside the thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..train.callbacks import Callback
from ..train.loop import TrainState

log = logging.getLogger(__name__)

CLOSE_WAIT_SECONDS = 10  # a run that failed waits this long for what it queued, then leaves it to log_run


class LiveRun(Callback):
    def __init__(self, run_dir: Path, uri: str, parent_id: Callable[[], str] | str | None = None) -> None:
        """parent_id: the parent MLflow run, or a function opening it when the run first logs."""
        self.run_dir, self.uri, self.parent_id = Path(run_dir), uri, parent_id
        self.client: Any = None
        self.run_id: str | None = None
        self.failed = False
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def on_train_begin(self, s: TrainState) -> None:
        from ..train.distributed import is_main

        if is_main():  # under torchrun, rank 0 logs
            self._submit(self._open, [*s.phase.earlier, *s.history])

    def on_epoch_final(self, s: TrainState) -> None:
        if self._thread is not None:
            self._submit(self._log, dict(s.history[-1]))

    def on_train_end(self, s: TrainState) -> None:
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        """Stop the thread, after what is queued (CLOSE_WAIT_SECONDS at most: after a failed training, what it
        leaves is logged when the run finishes)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(CLOSE_WAIT_SECONDS)
            self._thread = None

    def _submit(self, action, argument: Any) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="cnnarena-mlflow", daemon=True)
            self._thread.start()
        self._queue.put((action, argument))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                action, argument = item
                if not self.failed:
                    action(argument)
            except Exception as e:  # down or refusing: the run trains on, and log_run catches up at the end
                self.failed = True
                first = str(e).splitlines()[0] if str(e) else ""
                log.warning(f"MLflow at {self.uri} failed ({type(e).__name__}: {first}); logging live stops, the "
                            "finished run is logged at the end")
            finally:
                self._queue.task_done()

    def _open(self, rows: list[dict]) -> None:
        from .mlflow_log import open_run, tracking_client

        self.client = tracking_client(self.uri)
        parent = self.parent_id() if callable(self.parent_id) else self.parent_id
        self.run_id, _ = open_run(self.client, self.run_dir, self.uri, rows, parent)

    def _log(self, row: dict) -> None:
        from .mlflow_log import epoch_points, log_points

        log_points(self.client, self.run_id, epoch_points([row]))


def live_runs_under(open_parent: Callable[[], str], uri: str) -> Callable[[Path], list[Callback]]:
    """run directory -> [its LiveRun], all under one parent run, opened by open_parent when the first run that
    trains logs (inside the study's or search's own checks and locks, not before them)."""
    lock, opened = threading.Lock(), []

    def parent() -> str:
        with lock:
            if not opened:
                opened.append(open_parent())
            return opened[0]

    return lambda run_dir: [LiveRun(run_dir, uri, parent)]
