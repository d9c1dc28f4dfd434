"""Learning-rate schedules as one function of the optimiser step, with linear warm-up.

Param groups keep their own `base_lr` (layer-wise decay sets different ones); the schedule and
reduce-on-plateau only scale it.
"""

from __future__ import annotations

import math

import torch

from .config import TrainConfig
from .eager_optim import eager


def schedule_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = cfg.warmup_epochs * steps_per_epoch
    if cfg.schedule == "onecycle" and warmup == 0:
        warmup = 0.25 * total  # one-cycle means a ramp up then down
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
    epoch = step / steps_per_epoch
    match cfg.schedule:
        case "constant":
            return 1.0
        case "step":
            return cfg.gamma ** int(epoch // cfg.step_size)
        case "exponential":
            return cfg.gamma ** epoch
        case "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        case "onecycle" | "linear":
            return max(0.0, 1.0 - progress)
    raise AssertionError(cfg.schedule)


class LRController:
    """Sets every group's lr = base_lr × schedule(step) × plateau scale."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.optimizer, self.cfg, self.steps_per_epoch = optimizer, cfg, steps_per_epoch
        self.plateau_scale = 1.0
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])

    def set_step(self, step: int) -> float:
        factor = schedule_factor(self.cfg, step, self.steps_per_epoch) * self.plateau_scale
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        return self.optimizer.param_groups[-1]["lr"]

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[-1]["lr"]


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """`params` is an iterable of tensors or of param-group dicts (with their own lr).

    The fused implementations (one kernel for all parameters) where the device has them: on this 2-core
    CPU, simple-2conv at batch 32 trains 24% faster with fused Adam (1,744 -> 2,160 img/s), 11% with SGD.
    """
    params = list(params)
    if cfg.optimizer == "sgd":
        kind, options = torch.optim.SGD, {"momentum": cfg.momentum, "nesterov": cfg.nesterov and cfg.momentum > 0}
    else:
        kind, options = (torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam), {}
    options.update(lr=cfg.lr, weight_decay=cfg.weight_decay)
    kind = eager(kind)
    try:
        return kind(params, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without a fused kernel
        return kind(params, **options)
