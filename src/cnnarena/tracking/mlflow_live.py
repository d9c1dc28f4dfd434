"""A training callback that logs each epoch to MLflow as it ends, so `mlflow ui` shows the curves while the run
trains; the run directory's MLflow run is opened (or carried on after a resume) when each fit begins, and completed
by mlflow_log.log_run once the run has finished.

The logging happens on a thread of its own, in order, so a slow or unreachable tracking server (MLflow retries a
request for minutes) never holds the training up. A store that fails costs a warning, not the training: live
logging stops there, and log_run logs the epochs it missed. close() waits for what is queued, so log_run never
logs beside it.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

from ..train.callbacks import Callback
from ..train.loop import TrainState

log = logging.getLogger(__name__)


class LiveRun(Callback):
    def __init__(self, run_dir: Path, uri: str, parent_id: str | None = None) -> None:
        self.run_dir, self.uri, self.parent_id = Path(run_dir), uri, parent_id
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

    def close(self) -> None:
        """Wait until everything queued is logged (or given up), then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _submit(self, action, argument: Any) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="cnnarena-mlflow", daemon=True)
            self._thread.start()
        self._queue.put((action, argument))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            action, argument = item
            if self.failed:
                continue
            try:
                action(argument)
            except Exception as e:  # down or refusing: the run trains on, and log_run catches up at the end
                self.failed = True
                first = str(e).splitlines()[0] if str(e) else ""
                log.warning(f"MLflow at {self.uri} failed ({type(e).__name__}: {first}); logging live stops, the "
                            "finished run is logged at the end")

    def _open(self, rows: list[dict]) -> None:
        from .mlflow_log import open_run, tracking_client

        self.client = tracking_client(self.uri)
        self.run_id, _ = open_run(self.client, self.run_dir, self.uri, rows, self.parent_id)

    def _log(self, row: dict) -> None:
        from .mlflow_log import epoch_points, log_points

        log_points(self.client, self.run_id, epoch_points([row]))
