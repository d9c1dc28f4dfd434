"""The training loop: data on the device, batches sliced from tensors, callbacks for everything else.

fit() trains `model` for cfg.epochs on a train loader, measures on a val loader after every epoch,
tracks the best epoch by cfg.monitor, and leaves the model holding the best epoch's weights.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import BatchLoader
from ..errors import UserError
from ..models.base import Classifier
from . import distributed
from .budget import TimeBudget
from .callbacks import Callback
from .config import TrainConfig
from .precision import autocast_for, uses_bf16
from .schedule import LRController, build_optimizer
from .threads import ThreadTuner


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; a device asked for by name must exist here."""
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available to PyTorch here (use --device cpu or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not (mps and mps.is_available()):
        raise UserError(f"--device {name}: Apple's MPS is not available here (use --device cpu or auto)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: cnnarena trains on cpu, cuda or mps")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def wall_seconds(rows) -> float:
    """Training and validation time of history rows (cache fills are charged to their epochs)."""
    return sum(row["epoch_seconds"] + row.get("val_seconds", 0.0) for row in rows)


@dataclass(frozen=True)
class Phase:
    """What one fit() continues: a named phase after the history rows of `earlier` ones (fine-tuning's phase 2
    after phase 1). Its epochs are numbered after theirs, and their training time counts against max_minutes."""

    name: str = ""
    earlier: tuple[dict[str, Any], ...] = ()
    fills_budget: bool = True  # under --budget, plan epochs to use what is left (False: at most cfg.epochs)

    @property
    def first_epoch(self) -> int:
        return len(self.earlier)

    @property
    def seconds_before(self) -> float:
        return sum(row["epoch_seconds"] for row in self.earlier)

    @property
    def wall_seconds_before(self) -> float:
        """Training and validation time of the earlier phases: what they took of a --budget."""
        return wall_seconds(self.earlier)

    @property
    def label(self) -> str:
        return f"[{self.name}] " if self.name else ""


@dataclass(frozen=True)
class TrainResult:
    """What a whole training (one fit, or fine-tuning's two) ends with; the model holds the kept weights."""

    history: list[dict[str, Any]]
    best_epoch: int  # 1-based row of history whose weights were kept (0: none)
    stop_reason: str | None
    phase_boundary: int | None = None  # rows of fine-tuning's phase 1


@dataclass
class EpochProgress:
    """Running numbers of the epoch being trained, for the progress bar and the thread tuner."""

    t0: float = 0.0
    seen: int = 0
    loss: float = 0.0
    accuracy: float = 0.0


@dataclass
class TrainState:
    model: Classifier  # the whole model: best weights and checkpoints are its, whatever part of it trains
    optimizer: torch.optim.Optimizer
    lr_ctl: LRController
    cfg: TrainConfig
    batch_size: int
    phase: Phase = Phase()
    epoch: int = 0  # epochs completed in this phase
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # this phase's rows
    best_value: float | None = None
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    stop_reason: str | None = None
    train_seconds: float = 0.0  # earlier phases included
    progress: EpochProgress = field(default_factory=EpochProgress)
    generator: torch.Generator | None = None  # the training loader's: shuffles and augmentation draw from it
    callbacks: list[Callback] = field(default_factory=list)
    planned_epochs: int | None = None  # what a --budget planned (cfg.epochs follows it)

    def result(self) -> TrainResult:
        return TrainResult(self.history, self.best_epoch, self.stop_reason)

    def improved(self, row: dict[str, Any]) -> bool:
        value = row[self.cfg.monitor]
        better = self.best_value is None or (
            value < self.best_value - 1e-6 if self.cfg.monitor == "val_loss" else value > self.best_value + 1e-6)
        if better:
            self.best_value, self.best_epoch = value, row["epoch"]
        return better

    def resume_state(self) -> dict[str, Any]:
        """Everything but the weights that an uninterrupted run would carry into the next epoch."""
        state = {"epoch": self.epoch, "step": self.step, "history": self.history, "best_value": self.best_value,
                 "best_epoch": self.best_epoch, "optimizer": self.optimizer.state_dict(),
                 "plateau_scale": self.lr_ctl.plateau_scale, "train_seconds": self.train_seconds,
                 "stop_reason": self.stop_reason, "torch_rng": torch.get_rng_state(),
                 "planned_epochs": self.planned_epochs,
                 "callbacks": {name: saved for name, saved in ((type(cb).__name__, cb.state_dict())
                                                              for cb in self.callbacks) if saved is not None}}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def restore(self, resume: dict[str, Any]) -> None:
        """Carry on from resume_state() plus its "best_weights" (the last weights are loaded by the caller)."""
        self.optimizer.load_state_dict(resume["optimizer"])
        self.epoch, self.step, self.history = resume["epoch"], resume["step"], resume["history"]
        self.best_value, self.best_epoch = resume["best_value"], resume["best_epoch"]
        self.lr_ctl.plateau_scale, self.train_seconds = resume["plateau_scale"], resume["train_seconds"]
        self.stop_reason = resume.get("stop_reason")
        self.best_weights = resume.get("best_weights")
        if resume.get("planned_epochs") is not None:
            self.planned_epochs = resume["planned_epochs"]
            self.cfg = dataclasses.replace(self.cfg, epochs=self.planned_epochs)
            self.lr_ctl.cfg = self.cfg
        torch.set_rng_state(resume["torch_rng"])
        if "cuda_rng" in resume and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resume["cuda_rng"])
        if self.generator is not None:
            if "generator" in resume:
                self.generator.set_state(resume["generator"])
            else:  # an older checkpoint without the generator's state
                self.generator.manual_seed(self.cfg.seed + 1000 * self.epoch)
        saved = resume.get("callbacks", {})
        for cb in self.callbacks:
            if type(cb).__name__ in saved:
                cb.load_state_dict(saved[type(cb).__name__])


@torch.no_grad()
def evaluate_loader(model: Classifier, loader: BatchLoader, autocast=nullcontext) -> tuple[float, float]:
    """(mean loss, accuracy) over a loader, in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=loader.device)
    correct = torch.zeros((), device=loader.device, dtype=torch.long)
    for x, y in loader:
        with autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    loss_sum, correct = distributed.sum_all(loss_sum, correct)  # a sharded loader: every rank's part
    n = max(1, loader.num_samples)
    return loss_sum.item() / n, correct.item() / n


def fit(model: Classifier, train: BatchLoader, val: BatchLoader, cfg: TrainConfig, *,
        callbacks: Sequence[Callback] = (), param_groups: list[dict] | None = None, phase: Phase = Phase(),
        resume: dict[str, Any] | None = None, net: nn.Module | None = None) -> TrainState:
    """Train; returns the final state (history, best epoch, stop reason). The model ends on its best weights.

    phase: what this fit continues (see Phase). resume: a trainer state saved by the Checkpoint callback, with
    `model` already on its last weights (train.checkpoint.load_resume_point). net: what runs on the loaders'
    batches when that is not `model` itself - the tail behind a trunk cache, sharing its modules with `model`.
    """
    device = train.device
    net = model if net is None else net
    net.to(device)
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    params = param_groups if param_groups is not None else [p for p in net.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg)
    lr_ctl = LRController(optimizer, cfg, len(train))
    state = TrainState(model, optimizer, lr_ctl, cfg, train.batch_size, phase=phase,
                       generator=getattr(train, "generator", None), callbacks=list(callbacks),
                       train_seconds=phase.seconds_before)
    if resume is not None:
        state.restore(resume)
    budget = _time_budget(state, phase, train, val)
    ranks = distributed.world()
    tuner = ThreadTuner(torch.get_num_threads()) if device.type == "cpu" and ranks is None and \
        ThreadTuner.wanted(cfg.deterministic) else None  # ranks share the cores: torchrun gives each one thread
    autocast = autocast_for(device, uses_bf16(device, cfg.amp, model.meta.family))
    weights = cfg.class_weights if isinstance(cfg.class_weights, list) else None
    loss_weight = torch.tensor(weights, dtype=torch.float32, device=device) if weights else None
    # The compiled module shares parameters with `net`, so checkpoints and best weights stay as they are.
    step_net = distributed.wrap(net, device, cfg.sync_bn)  # DDP over net when torchrun started several ranks
    step_net = torch.compile(step_net) if cfg.compile else step_net
    for cb in state.callbacks:
        cb.on_train_begin(state)
    if tuner is not None:
        tuner.begin()
    try:
        while state.epoch < state.cfg.epochs and state.stop_reason is None:
            t_epoch = time.perf_counter()
            row = _train_one_epoch(state, net, step_net, train, autocast, tuner, loss_weight, budget)
            _end_epoch(state, row, net, val, autocast, phase)
            if budget is not None and state.stop_reason is None:  # the epoch's whole cost: checkpoints too
                budget.after_epoch(state, time.perf_counter() - t_epoch)
            if ranks is not None:  # clocks differ between ranks: rank 0's decisions hold for all
                _follow_main(state)
        if budget is not None and state.stop_reason is None and phase.fills_budget:
            state.stop_reason = f"time budget of {cfg.budget}: the {state.epoch} epochs that fit"
    finally:
        if tuner is not None:
            tuner.end()  # the process gets its threads back
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    for cb in state.callbacks:
        cb.on_train_end(state)
    return state


def _time_budget(state: TrainState, phase: Phase, train: BatchLoader, val: BatchLoader) -> TimeBudget | None:
    """The --budget's planner for this fit, charged with what the run spent before it (None: no budget)."""
    cfg = state.cfg
    if cfg.budget_seconds is None:
        return None
    precharged = sum(cb.seconds_before_fit for cb in state.callbacks)
    return TimeBudget(state, cfg.budget_seconds,
                      spent_before=phase.wall_seconds_before + wall_seconds(state.history) + precharged,
                      num_batches=len(train), val_samples=val.num_samples, fills=phase.fills_budget,
                      first_of_run=not phase.earlier and not state.history)


def _end_epoch(state: TrainState, row: dict[str, Any], net: nn.Module, val: BatchLoader, autocast,
               phase: Phase) -> None:
    """Validate, record the epoch, keep the best weights, and let the callbacks see it."""
    cfg = state.cfg
    row["epoch"] = phase.first_epoch + state.epoch + 1
    if not np.isfinite(row.get("train_loss", 0.0)):  # every later epoch would train on NaN: stop, and say why
        raise UserError(f"epoch {row['epoch']}: the training loss is {row['train_loss']} (not a finite number): "
                        f"give a lower --lr (it was {cfg.lr:g}) or --grad-clip 1")
    if phase.name:
        row["phase"] = phase.name
    t_val = time.perf_counter()
    row["val_loss"], row["val_accuracy"] = evaluate_loader(net, val, autocast)
    row["val_seconds"] = round(time.perf_counter() - t_val, 3)
    state.epoch += 1
    state.history.append(row)
    if state.improved({**row, "epoch": state.epoch}):
        state.best_weights = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
    for cb in state.callbacks:
        cb.on_epoch_end(state)
    if cfg.max_minutes is not None and state.train_seconds > 60 * cfg.max_minutes and state.stop_reason is None:
        state.stop_reason = f"time budget of {cfg.max_minutes:g} minutes reached"
    for cb in state.callbacks:
        cb.on_epoch_final(state)


def _follow_main(state: TrainState) -> None:
    stop, epochs = distributed.from_main((state.stop_reason, state.cfg.epochs))
    state.stop_reason = stop
    if epochs != state.cfg.epochs:
        state.planned_epochs = epochs
        state.cfg = dataclasses.replace(state.cfg, epochs=epochs)
        state.lr_ctl.cfg = state.cfg


def _train_one_epoch(state: TrainState, net: nn.Module, step_net: nn.Module, train: BatchLoader, autocast,
                     tuner: ThreadTuner | None, loss_weight: torch.Tensor | None,
                     budget: TimeBudget | None = None) -> dict[str, Any]:
    cfg, opt, progress, callbacks = state.cfg, state.optimizer, state.progress, state.callbacks
    net.train()
    progress.t0, progress.seen = time.perf_counter(), 0
    loss_sum = torch.zeros((), device=train.device)
    correct = torch.zeros((), device=train.device, dtype=torch.long)
    num_batches = len(train)
    ranks = distributed.world()
    for b, (x, y) in enumerate(train, start=1):
        lr = state.lr_ctl.set_step(state.step)
        opt.zero_grad(set_to_none=True)
        # DDP averages the ranks' gradients; scaled by this rank's share of the batch, they add up to the gradient
        # of the whole batch's mean loss, as one process computes it (ranks' parts differ by one at most)
        share = 1.0 if ranks is None else y.shape[0] * ranks.size / max(1, getattr(train, "global_batch", 0))
        if cfg.micro_batch is not None and y.shape[0] > cfg.micro_batch:
            logits, loss = _accumulate(step_net, x, y, cfg, autocast, loss_weight, share)
        else:
            with autocast():
                logits = step_net(x)
                loss = F.cross_entropy(logits.float(), y, weight=loss_weight, label_smoothing=cfg.label_smoothing)
            (loss * share if share != 1.0 else loss).backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        state.step += 1
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        progress.seen += y.shape[0]
        if tuner is not None:
            tuner.after_step(state)
        if callbacks and b % 10 == 0 or b == num_batches:  # .item() syncs a GPU: only now and then
            progress.loss = loss_sum.item() / progress.seen
            progress.accuracy = correct.item() / progress.seen
            for cb in callbacks:
                cb.on_batch_end(state, b, num_batches)
        over = budget is not None and budget.after_step(state, b)
        if budget is not None and ranks is not None:  # the probe's plan and the deadline are rank 0's
            over, epochs = distributed.from_main((over, state.cfg.epochs))
            if epochs != state.cfg.epochs:
                state.planned_epochs = epochs
                state.cfg = dataclasses.replace(state.cfg, epochs=epochs)
                state.lr_ctl.cfg = state.cfg
        if over and state.stop_reason is None:
            state.stop_reason = f"time budget of {cfg.budget} reached" + (
                f" after {b} of {num_batches} steps of an epoch" if b < num_batches else "")
            break
    seconds = time.perf_counter() - progress.t0
    state.train_seconds += seconds
    seen = torch.tensor(float(progress.seen))
    loss_sum, correct, seen = distributed.sum_all(loss_sum, correct, seen)  # the epoch over every rank
    progress.seen = int(seen.item())
    return {"train_loss": loss_sum.item() / max(1, progress.seen),
            "train_accuracy": correct.item() / max(1, progress.seen),
            "lr": lr, "epoch_seconds": round(seconds, 3),
            "images_per_second": round(progress.seen / max(seconds, 1e-9), 1)}


def _accumulate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, autocast,
                loss_weight: torch.Tensor | None, share: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's gradients from micro-batches of cfg.micro_batch: each chunk's summed loss over the whole batch's
    normaliser (its size, or the sum of its samples' class weights) adds up to the whole batch's mean loss.
    Under DDP the ranks' gradients are averaged once, after the last chunk (no_sync before it)."""
    norm = loss_weight[y].sum() if loss_weight is not None else torch.tensor(float(y.shape[0]), device=y.device)
    parts, total = [], torch.zeros((), device=y.device)
    chunks = list(zip(x.split(cfg.micro_batch), y.split(cfg.micro_batch), strict=True))
    for i, (xs, ys) in enumerate(chunks):
        quiet = net.no_sync() if hasattr(net, "no_sync") and i < len(chunks) - 1 else nullcontext()
        with quiet:
            with autocast():
                out = net(xs)
                part = F.cross_entropy(out.float(), ys, weight=loss_weight, label_smoothing=cfg.label_smoothing,
                                       reduction="sum") / norm
            (part * share if share != 1.0 else part).backward()
        parts.append(out.detach())
        total += part.detach()
    return torch.cat(parts), total
