"""Learning-rate range test (fastai's lr_find / Leslie Smith): raise the LR exponentially each batch,
record the smoothed loss, stop when it blows up, suggest the LR where the loss falls fastest.

The figure is drawn by report/lr_plot.py (plot_lr_find): train sits below report."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F

from ..data.loader import BatchLoader
from ..errors import UserError
from ..models.base import Classifier
from .config import TrainConfig
from .precision import autocast_for, uses_bf16
from .schedule import build_optimizer


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # exponentially smoothed, bias-corrected
    suggestion: float  # steepest descent of the smoothed loss
    min_loss_lr: float  # where the loss bottomed out; suggestion is usually ~1/10 of it
    plot: Path | None = None  # where lr-find drew the curve


MIN_STEPS = 5  # the suggestion needs a few points of the curve (see _steepest)


def check_range(start_lr: float, end_lr: float, steps: int) -> None:
    """UserError unless 0 < start_lr < end_lr (finite) and steps >= MIN_STEPS."""
    if steps < MIN_STEPS:
        raise UserError(f"--steps must be at least {MIN_STEPS} (the suggestion needs a few points), got {steps}")
    for name, lr in (("--start-lr", start_lr), ("--end-lr", end_lr)):
        if not (math.isfinite(lr) and lr > 0):
            raise UserError(f"{name} must be a positive number, got {lr}")
    if start_lr >= end_lr:
        raise UserError(f"--start-lr ({start_lr:g}) must be below --end-lr ({end_lr:g}): the test raises the LR")


def lr_find(model: Classifier, loader: BatchLoader, cfg: TrainConfig, *, start_lr: float = 1e-7,
            end_lr: float = 10.0, steps: int = 100, beta: float = 0.9) -> LRFindResult:
    """Trains a copy of the model (the original is untouched) for at most `steps` batches."""
    check_range(start_lr, end_lr, steps)
    model = copy.deepcopy(model).to(loader.device).train()
    opt = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    autocast = autocast_for(loader.device, uses_bf16(loader.device, cfg.amp, model.meta.family))  # as fit() trains
    gamma = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    lrs, losses = [], []
    avg, best = 0.0, math.inf
    step = 0
    while step < steps:
        for x, y in loader:
            lr = start_lr * gamma**step
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast():
                loss = F.cross_entropy(model(x).float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            avg = beta * avg + (1 - beta) * loss.item()
            smoothed = avg / (1 - beta ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            step += 1
            if step >= steps or not math.isfinite(smoothed) or smoothed > 4 * best:
                step = steps  # diverged: the rest of the range tells nothing
                break
    return LRFindResult(lrs, losses, _steepest(lrs, losses), lrs[min(range(len(losses)), key=losses.__getitem__)])


def _steepest(lrs: list[float], losses: list[float]) -> float:
    """LR at the most negative slope of loss vs log(lr), before the minimum, ignoring the noisy start."""
    if len(lrs) < 5:
        return lrs[0]
    lo = len(lrs) // 10
    hi = max(lo + 2, min(range(len(losses)), key=losses.__getitem__))  # past the minimum, the loss is diverging
    slopes = [(losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
              for i in range(max(1, lo), min(hi, len(lrs) - 1))]
    i = min(range(len(slopes)), key=slopes.__getitem__) + max(1, lo)
    return lrs[i]
