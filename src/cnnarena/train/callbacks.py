"""Small single-purpose hooks (Lightning/Keras style) instead of flags threaded through the loop."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .loop import TrainState


def standard_callbacks(cfg, run_dir: Path, progress: bool, earlier: list[dict] | None = None) -> list[Callback]:
    """The callbacks a training config asks for; `earlier` = history rows of a previous phase."""
    callbacks: list[Callback] = [MetricsLog(run_dir, earlier), Checkpoint(run_dir)]  # Checkpoint saves last
    if cfg.early_stopping:
        callbacks.append(EarlyStopping(cfg.early_stopping))
    if cfg.reduce_on_plateau:
        callbacks.append(ReduceLROnPlateau(cfg.reduce_on_plateau))
    if progress:
        callbacks.append(ProgressBar())
    return callbacks


class Callback:
    def on_train_begin(self, s: TrainState) -> None: ...
    def on_batch_end(self, s: TrainState, batch: int, num_batches: int) -> None: ...
    def on_epoch_end(self, s: TrainState) -> None: ...
    def on_epoch_final(self, s: TrainState) -> None:
        """After every on_epoch_end and the time-budget check: the epoch's state will not change any more."""
    def on_train_end(self, s: TrainState) -> None: ...

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
            s.log(f"reduce-on-plateau: learning rate x{self.factor} -> scale {s.lr_ctl.plateau_scale:g}")

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait = state["best"], state["wait"]


class MetricsLog(Callback):
    """history.csv and history.jsonl in the run directory, rewritten after every epoch."""

    def __init__(self, run_dir: Path, earlier: list[dict] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.earlier = earlier or []  # rows of an earlier phase (fine-tuning), kept in the same file

    def on_epoch_end(self, s: TrainState) -> None:
        rows = self.earlier + s.history
        keys = list(dict.fromkeys(k for row in rows for k in row))
        with open(self.run_dir / "history.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        (self.run_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


class Checkpoint(Callback):
    """checkpoints/trainer_state.pt every epoch: one file, replaced atomically, with everything a killed run
    needs to resume (last and best weights, optimizer, RNGs, callback state), so weights and state can never
    come from different epochs. checkpoints/last.* and best.* (safetensors + JSON) are copies for users."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.best: dict | None = None

    def on_train_begin(self, s: TrainState) -> None:
        if s.resume_point is not None:
            self.best = s.resume_point["best_weights"]

    def on_epoch_final(self, s: TrainState) -> None:
        from .checkpoint import cpu_state, save_model, save_trainer_state

        improved = s.best_epoch == s.epoch
        if improved:
            self.best = cpu_state(s.model)
        save_trainer_state(self.dir / "trainer_state.pt",
                           {**s.resume_state(), "weights": cpu_state(s.model), "best_weights": self.best})
        if improved:
            save_model(s.model, self.dir / "best", {"epoch": s.epoch})
        save_model(s.model, self.dir / "last", {"epoch": s.epoch})


class ProgressBar(Callback):
    """A live bar on a terminal (epoch, batch, loss, accuracy, lr, images/s, ETA); one line per epoch otherwise."""

    def __init__(self, stream=None, every: int = 10) -> None:
        self.stream, self.every = stream or sys.stderr, every  # sys.stderr now, not at import (redirectable)
        self.live = self.stream.isatty()
        self.t0 = 0.0

    def on_train_begin(self, s: TrainState) -> None:
        self.t0 = time.perf_counter()

    def on_batch_end(self, s: TrainState, batch: int, num_batches: int) -> None:
        if not self.live or (batch % self.every and batch != num_batches):
            return
        seen = s.epoch_seen
        rate = seen / max(1e-9, time.perf_counter() - s.epoch_t0)
        left = (num_batches - batch) * s.batch_size / max(rate, 1e-9)
        left += (s.cfg.epochs - s.epoch - 1) * num_batches * s.batch_size / max(rate, 1e-9)
        width = 24
        done = int(width * batch / num_batches)
        self.stream.write(
            f"\r{s.phase_label}epoch {s.epoch + 1}/{s.cfg.epochs} [{'#' * done}{'.' * (width - done)}] "
            f"{batch}/{num_batches} loss {s.running_loss:.4f} acc {s.running_acc:.3f} lr {s.lr_ctl.lr:.2e} "
            f"{rate:,.0f} img/s ETA {left:4.0f}s ")
        self.stream.flush()

    def on_epoch_end(self, s: TrainState) -> None:
        row = s.history[-1]
        self.stream.write(
            # numbered within the phase, like the live bar (history rows carry the run-wide number)
            f"\r{s.phase_label}epoch {s.epoch:>3}/{s.cfg.epochs}  "
            f"loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}  "
            f"val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f}  "
            f"lr {row['lr']:.2e}  {row['images_per_second']:,.0f} img/s  {row['epoch_seconds']:.1f}s" + " " * 20 + "\n")
        self.stream.flush()
