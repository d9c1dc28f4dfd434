"""Small single-purpose hooks (Lightning/Keras style) instead of flags threaded through the loop."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import rundir
from ..runtime import settings

if TYPE_CHECKING:
    from .loop import TrainState

log = logging.getLogger(__name__)


def standard_callbacks(cfg, run_dir: Path) -> list[Callback]:
    """The callbacks a training config asks for, writing into run_dir; progress goes to the log. Under torchrun
    the ranks other than 0 keep the ones that decide (every rank sees the same all-reduced metrics) and write
    nothing."""
    from .distributed import is_main

    writes = is_main()
    callbacks: list[Callback] = [MetricsLog(run_dir), Checkpoint(run_dir)] if writes else []  # Checkpoint: last
    if writes and cfg.tensorboard:
        callbacks.append(TensorBoardLog(run_dir))
    if cfg.early_stopping:
        callbacks.append(EarlyStopping(cfg.early_stopping))
    if cfg.reduce_on_plateau:
        callbacks.append(ReduceLROnPlateau(cfg.reduce_on_plateau))
    if writes:
        callbacks.append(ProgressBar())
    return callbacks


class Callback:
    seconds_before_fit: float = 0.0  # work done for this fit before it started (a cache fill): counts against --budget

    def on_train_begin(self, s: TrainState) -> None: ...
    def on_batch_end(self, s: TrainState, batch: int, num_batches: int) -> None: ...
    def on_epoch_end(self, s: TrainState) -> None: ...
    def on_epoch_final(self, s: TrainState) -> None:
        """After every on_epoch_end and the time-budget check: the epoch's state will not change any more."""
    def on_train_end(self, s: TrainState) -> None: ...
    def close(self) -> None:
        """Once the run is over (train_run has returned; a fine-tune has several fits): let go of what it holds."""

    def state_dict(self) -> dict | None:
        """What a resumed run needs to carry on exactly (None: nothing)."""
        return None

    def load_state_dict(self, state: dict) -> None: ...


class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for `patience` epochs (best is restored by fit)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, s: TrainState) -> None:
        if s.epoch - s.best_epoch >= self.patience:
            s.stop_reason = f"early stopping: no improvement in {s.cfg.monitor} for {self.patience} epochs"


class ReduceLROnPlateau(Callback):
    """Halve the learning rate when validation loss has not improved for `patience` epochs."""

    def __init__(self, patience: int, factor: float = 0.5, min_scale: float = 1e-3) -> None:
        self.patience, self.factor, self.min_scale = patience, factor, min_scale
        self.best, self.wait = float("inf"), 0

    def on_epoch_end(self, s: TrainState) -> None:
        loss = s.history[-1]["val_loss"]
        if loss < self.best - 1e-4:
            self.best, self.wait = loss, 0
            return
        self.wait += 1
        if self.wait >= self.patience and s.lr_ctl.plateau_scale > self.min_scale:
            s.lr_ctl.plateau_scale *= self.factor
            self.wait = 0
            log.info(f"{s.phase.label}reduce-on-plateau: learning rate x{self.factor} -> "
                     f"scale {s.lr_ctl.plateau_scale:g}")

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait = state["best"], state["wait"]


class MetricsLog(Callback):
    """history.csv and history.jsonl in the run directory, rewritten after every epoch (earlier phases' rows
    first: one history per run)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def on_epoch_end(self, s: TrainState) -> None:
        rundir.write_history(self.run_dir, [*s.phase.earlier, *s.history])


class Checkpoint(Callback):
    """checkpoints/trainer_state.pt every epoch: one file, replaced atomically, with everything a killed run
    needs to resume (last and best weights, optimizer, RNGs, callback state), so weights and state can never
    come from different epochs. checkpoints/last.* and best.* (safetensors + JSON) are copies for users."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / rundir.CHECKPOINTS

    def on_epoch_final(self, s: TrainState) -> None:
        from ..models.artefacts import save_model
        from .checkpoint import cpu_state, save_trainer_state

        best = {k: v.detach().to("cpu", copy=True) for k, v in (s.best_weights or {}).items()} or None
        save_trainer_state(self.dir / "trainer_state.pt",
                           {**s.resume_state(), "weights": cpu_state(s.model), "best_weights": best})
        if s.best_epoch == s.epoch:
            save_model(s.model, self.dir / "best", {"epoch": s.epoch})
        save_model(s.model, self.dir / "last", {"epoch": s.epoch})


class ProgressBar(Callback):
    """One log line per epoch (epoch, loss, accuracy, lr, images/s, time), and with runtime's live_progress a
    live bar redrawn on stderr while the epoch trains (batch, loss, accuracy, lr, images/s, ETA)."""

    def __init__(self, stream=None, every: int = 10) -> None:
        self.stream, self.every = stream, every
        self.drawn = False
        self.bar = None  # the notebook's bar of the epoch being trained

    @property
    def live(self) -> bool:
        return settings().live_progress

    def _out(self):
        return self.stream or sys.stderr  # sys.stderr now, not at construction (redirectable)

    def on_batch_end(self, s: TrainState, batch: int, num_batches: int) -> None:
        if settings().notebook_progress:
            self._notebook_bar(s, batch, num_batches)
            return
        if not self.live or (batch % self.every and batch != num_batches):
            return
        p = s.progress
        rate = p.seen / max(1e-9, time.perf_counter() - p.t0)
        left = (num_batches - batch) * s.batch_size / max(rate, 1e-9)
        left += (s.cfg.epochs - s.epoch - 1) * num_batches * s.batch_size / max(rate, 1e-9)
        width = 24
        done = int(width * batch / num_batches)
        out = self._out()
        out.write(
            f"\r{s.phase.label}epoch {s.epoch + 1}/{s.cfg.epochs} [{'#' * done}{'.' * (width - done)}] "
            f"{batch}/{num_batches} loss {p.loss:.4f} acc {p.accuracy:.3f} lr {s.lr_ctl.lr:.2e} "
            f"{rate:,.0f} img/s ETA {left:4.0f}s ")
        out.flush()
        self.drawn = True

    def _notebook_bar(self, s: TrainState, batch: int, num_batches: int) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=num_batches, desc=f"{s.phase.label}epoch {s.epoch + 1}/{s.cfg.epochs}",
                            unit="batch", leave=False)
        self.bar.update(batch - self.bar.n)
        self.bar.set_postfix(loss=f"{s.progress.loss:.4f}", acc=f"{s.progress.accuracy:.3f}", refresh=False)

    def on_epoch_end(self, s: TrainState) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.drawn:  # clear the live bar's line before the epoch's log line
            self._out().write("\r\033[K")
            self.drawn = False
        row = s.history[-1]
        # numbered within the phase, like the live bar (history rows carry the run-wide number)
        log.info(f"{s.phase.label}epoch {s.epoch:>3}/{s.cfg.epochs}  "
                 f"loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}  "
                 f"val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f}  "
                 f"lr {row['lr']:.2e}  {row['images_per_second']:,.0f} img/s  {row['epoch_seconds']:.1f}s")


class TensorBoardLog(Callback):
    """TensorBoard event files in the run directory (train/tensorboard_log.py says what): one per fit, holding
    every row of the history so far (after purging the earlier files' epochs), then each new epoch."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.writer = None

    def on_train_begin(self, s: TrainState) -> None:
        from .tensorboard_log import writer_for

        self.writer = writer_for(self.run_dir, purge_step=1)
        for row in [*s.phase.earlier, *s.history]:
            self._write(row)

    def on_epoch_final(self, s: TrainState) -> None:
        self._write(s.history[-1])
        self.writer.flush()

    def on_train_end(self, s: TrainState) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _write(self, row: dict) -> None:
        from .tensorboard_log import epoch_scalars

        for tag, value in epoch_scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=int(row["epoch"]))
