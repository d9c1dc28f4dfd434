"""The training loop: data on the device, batches sliced from tensors, callbacks for everything else.

fit() trains `model` for cfg.epochs on a train loader, measures on a val loader after every epoch,
tracks the best epoch by cfg.monitor, and leaves the model holding the best epoch's weights.
"""

from __future__ import annotations

import copy
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loader import BatchLoader
from ..errors import UserError
from ..memory import keep_freed_memory
from ..models.base import Classifier
from .callbacks import Callback
from .config import TrainConfig
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


def autocast_for(device: torch.device, amp: bool | None):
    """bf16 autocast on CUDA by default; plain fp32 elsewhere (CPU bf16 is slow without AMX)."""
    use = (device.type == "cuda") if amp is None else amp
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use else nullcontext


@dataclass
class TrainState:
    model: Classifier
    optimizer: torch.optim.Optimizer
    lr_ctl: LRController
    cfg: TrainConfig
    batch_size: int
    epoch: int = 0  # epochs completed
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    stop_reason: str | None = None
    train_seconds: float = 0.0
    phase: str = ""
    # running numbers of the current epoch, for the progress bar
    epoch_t0: float = 0.0
    epoch_seen: int = 0
    running_loss: float = 0.0
    running_acc: float = 0.0
    messages: list[str] = field(default_factory=list)
    step_model: torch.nn.Module | None = None  # what the training step calls (the model, or its compiled form)
    generator: torch.Generator | None = None  # the training loader's: shuffles and augmentation draw from it
    callbacks: list[Callback] = field(default_factory=list)
    resume_point: dict[str, Any] | None = None  # the trainer state this fit resumed from
    tuner: ThreadTuner | None = None  # CPU: picks the thread count by measurement

    @property
    def phase_label(self) -> str:
        return f"[{self.phase}] " if self.phase else ""

    def log(self, message: str) -> None:
        self.messages.append(message)

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
                 "callbacks": {name: saved for name, saved in ((type(cb).__name__, cb.state_dict())
                                                              for cb in self.callbacks) if saved is not None}}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def restore(self, resume: dict[str, Any], best_weights: dict[str, torch.Tensor] | None) -> None:
        """Carry on from resume_state() (weights are loaded by the caller)."""
        self.optimizer.load_state_dict(resume["optimizer"])
        self.epoch, self.step, self.history = resume["epoch"], resume["step"], resume["history"]
        self.best_value, self.best_epoch = resume["best_value"], resume["best_epoch"]
        self.lr_ctl.plateau_scale, self.train_seconds = resume["plateau_scale"], resume["train_seconds"]
        self.stop_reason = resume.get("stop_reason")
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
        self.best_weights, self.resume_point = best_weights, resume


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
    n = max(1, loader.num_samples)
    return loss_sum.item() / n, correct.item() / n


def fit(model: Classifier, train: BatchLoader, val: BatchLoader, cfg: TrainConfig, *,
        callbacks: list[Callback] = (), param_groups: list[dict] | None = None,
        resume: dict[str, Any] | None = None, resume_best: dict[str, torch.Tensor] | None = None,
        phase: str = "", first_epoch_label: int = 0, seconds_before: float = 0.0) -> TrainState:
    """Train; returns the final state (history, best epoch, stop reason). The model ends on its best weights.

    first_epoch_label offsets the epoch numbers written to history (for a second fine-tuning phase);
    seconds_before is training time an earlier phase spent, counted against cfg.max_minutes.
    """
    device = train.device
    if device.type == "cpu":
        keep_freed_memory()
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = param_groups if param_groups is not None else [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg)
    lr_ctl = LRController(optimizer, cfg, len(train))
    state = TrainState(model, optimizer, lr_ctl, cfg, train.batch_size, phase=phase,
                       generator=getattr(train, "generator", None), callbacks=list(callbacks),
                       train_seconds=seconds_before)
    if resume is not None:
        state.restore(resume, resume_best)
    if device.type == "cpu" and ThreadTuner.wanted(cfg.deterministic):
        state.tuner = ThreadTuner(torch.get_num_threads())
        state.tuner.begin()
    autocast = autocast_for(device, cfg.amp)
    # The compiled module shares parameters with `model`, so checkpoints and best weights stay as they are.
    state.step_model = torch.compile(model) if cfg.compile else model
    for cb in callbacks:
        cb.on_train_begin(state)
    try:
        while state.epoch < cfg.epochs and state.stop_reason is None:
            row = _train_one_epoch(state, train, callbacks, autocast)
            row["epoch"] = first_epoch_label + state.epoch + 1
            if phase:
                row["phase"] = phase
            row["val_loss"], row["val_accuracy"] = evaluate_loader(model, val, autocast)
            state.epoch += 1
            state.history.append(row)
            if state.improved({**row, "epoch": state.epoch}):
                state.best_weights = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
            for cb in callbacks:
                cb.on_epoch_end(state)
            if cfg.max_minutes is not None and state.train_seconds > 60 * cfg.max_minutes and state.stop_reason is None:
                state.stop_reason = f"time budget of {cfg.max_minutes:g} minutes reached"
            for cb in callbacks:
                cb.on_epoch_final(state)
    finally:
        if state.tuner is not None:
            state.tuner.end()  # the process gets its threads back
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    for cb in callbacks:
        cb.on_train_end(state)
    return state


def _train_one_epoch(state: TrainState, train: BatchLoader, callbacks, autocast) -> dict[str, Any]:
    model, cfg, opt = state.model, state.cfg, state.optimizer
    model.train()
    state.epoch_t0, state.epoch_seen = time.perf_counter(), 0
    loss_sum = torch.zeros((), device=train.device)
    correct = torch.zeros((), device=train.device, dtype=torch.long)
    num_batches = len(train)
    for b, (x, y) in enumerate(train, start=1):
        lr = state.lr_ctl.set_step(state.step)
        with autocast():
            logits = state.step_model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state.step += 1
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        state.epoch_seen += y.shape[0]
        if state.tuner is not None:
            state.tuner.after_step(state)
        if callbacks and b % 10 == 0 or b == num_batches:  # .item() syncs a GPU: only now and then
            state.running_loss = loss_sum.item() / state.epoch_seen
            state.running_acc = correct.item() / state.epoch_seen
            for cb in callbacks:
                cb.on_batch_end(state, b, num_batches)
    seconds = time.perf_counter() - state.epoch_t0
    state.train_seconds += seconds
    return {"train_loss": loss_sum.item() / max(1, state.epoch_seen),
            "train_accuracy": correct.item() / max(1, state.epoch_seen),
            "lr": lr, "epoch_seconds": round(seconds, 3),
            "images_per_second": round(state.epoch_seen / max(seconds, 1e-9), 1)}
