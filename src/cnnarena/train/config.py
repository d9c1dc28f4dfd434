"""Training hyper-parameters: one dataclass, validated with messages a user can act on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..data.augment_spec import AugmentConfig
from ..errors import UserError
from ..schema import RUN, defaults

_DEFAULTS = defaults(RUN)  # every default is declared once, in schema.py

OPTIMIZERS = ("adam", "adamw", "sgd")
SAMPLERS = ("shuffle", "balanced")
SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle", "linear")


@dataclass
class TrainConfig:
    epochs: int = _DEFAULTS["epochs"]
    batch_size: int = _DEFAULTS["batch_size"]
    lr: float = _DEFAULTS["lr"]
    optimizer: str = _DEFAULTS["optimizer"]
    momentum: float = _DEFAULTS["momentum"]  # SGD only
    nesterov: bool = _DEFAULTS["nesterov"]  # SGD only
    weight_decay: float = _DEFAULTS["weight_decay"]
    schedule: str = _DEFAULTS["schedule"]
    warmup_epochs: float = _DEFAULTS["warmup_epochs"]
    step_size: int = _DEFAULTS["step_size"]  # 'step' schedule: epochs between decays
    gamma: float = _DEFAULTS["gamma"]  # 'step' / 'exponential' decay factor
    label_smoothing: float = _DEFAULTS["label_smoothing"]
    grad_clip: float | None = _DEFAULTS["grad_clip"]  # max global grad norm
    early_stopping: int | None = _DEFAULTS["early_stopping"]  # patience in epochs (restores the best epoch)
    reduce_on_plateau: int | None = _DEFAULTS["reduce_on_plateau"]  # patience in epochs; LR x0.5 when val loss stalls
    monitor: str = _DEFAULTS["monitor"]  # val_loss or val_accuracy: what "best" means
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tta: bool = _DEFAULTS["tta"]  # average predictions over the image and its mirror at evaluation
    tta_shift: int = _DEFAULTS["tta_shift"]  # with tta: and over the image moved this many pixels each way
    seed: int = _DEFAULTS["seed"]
    deterministic: bool = _DEFAULTS["deterministic"]
    # torchrun on GPUs: BatchNorm statistics over the whole batch, not each rank's part
    sync_bn: bool = _DEFAULTS["sync_bn"]
    amp: bool | None = _DEFAULTS["amp"]  # bf16 autocast; None = train.precision's rule
    channels_last: bool = _DEFAULTS["channels_last"]
    compile: bool = _DEFAULTS["compile"]  # torch.compile the model for training (pays off on GPUs; measure on CPUs)
    device: str = _DEFAULTS["device"]
    max_minutes: float | None = _DEFAULTS["max_minutes"]  # time limit: stop after the epoch that crosses it
    # wall-clock budget of the whole training ("20m", "90s", "1.5h"): epochs are planned from a timing probe so the
    # schedule ends on time, and training stops on time (mid-epoch if need be) with its best weights
    budget: str | None = _DEFAULTS["budget"]
    # peak memory of the process: auto (CPU: a share of what is free, at most 4 GB), none, 3GB
    max_memory: str = _DEFAULTS["max_memory"]
    # set by the memory plan: one forward/backward's batch (gradient accumulation)
    micro_batch: int | None = _DEFAULTS["micro_batch"]
    eval_batch_size: int = _DEFAULTS["eval_batch_size"]
    # TensorBoard event files in the run directory (train/tensorboard_log.py)
    tensorboard: bool = _DEFAULTS["tensorboard"]
    # the loss' class weights: "none", "auto" (inverse frequency, resolved to a list from the training set before
    # training), a YAML/JSON file of class: weight, or the list itself (one weight per class)
    class_weights: str | list[float] = _DEFAULTS["class_weights"]
    # "balanced": every class equally likely in every batch (drawn with replacement)
    sampler: str = _DEFAULTS["sampler"]

    def fit_to_data(self, num_train: int, min_steps: int = 16) -> tuple[TrainConfig, str | None]:
        """A batch of 256 on 1,000 images is 4 steps an epoch: too few for a schedule or BatchNorm to settle.
        Shrink the batch (to a power of two) so an epoch has at least `min_steps` steps, scaling the LR
        linearly with it (Goyal et al., 2017)."""
        cap = max(8, num_train // min_steps)
        if self.batch_size <= cap:
            return self, None
        batch = 1 << (cap.bit_length() - 1)
        lr = self.lr * batch / self.batch_size
        note = (f"batch size {self.batch_size} -> {batch} and lr {self.lr:g} -> {lr:g}: only {num_train:,} "
                f"training images ({-(-num_train // batch)} steps per epoch instead of "
                f"{-(-num_train // self.batch_size)})")
        return replace(self, batch_size=batch, lr=lr), note

    def resolve_class_weights(self, counts: list[int], classes: list[str]) -> TrainConfig:
        """class_weights as one weight per class: "auto" from the training set's class counts (scikit-learn's
        'balanced': n / (classes x count)), a file read and checked against the class names."""
        spec = self.class_weights
        if isinstance(spec, list):
            if len(spec) != len(classes):
                raise UserError(f"--class-weights lists {len(spec)} weights for {len(classes)} classes")
            return self
        if spec == "none":
            return self
        if spec == "auto":
            import numpy as np
            from sklearn.utils.class_weight import compute_class_weight

            labels = np.repeat(np.arange(len(counts)), counts)
            present = np.unique(labels)
            weights = dict(zip(present.tolist(), compute_class_weight("balanced", classes=present, y=labels),
                               strict=True))
            return replace(self, class_weights=[round(float(weights.get(c, 1.0)), 6) for c in range(len(counts))])
        return replace(self, class_weights=_weights_file(spec, classes))

    def validate(self) -> TrainConfig:
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1 (got {self.epochs})"),
            (0 <= self.seed <= 2**32 - 1, f"--seed must be between 0 and {2**32 - 1} (got {self.seed})"),
            (self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
            (self.lr > 0, f"--lr must be positive (got {self.lr})"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; use {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; use {', '.join(SCHEDULES)}"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
            (0 <= self.tta_shift <= 8, f"--tta-shift must be between 0 and 8 pixels (got {self.tta_shift})"),
            (self.monitor in ("val_loss", "val_accuracy"), "--monitor must be val_loss or val_accuracy"),
            (self.warmup_epochs >= 0, "--warmup-epochs must be >= 0"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0 (got {self.weight_decay})"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1) (got {self.momentum})"),
            (self.grad_clip is None or self.grad_clip > 0,
             f"--grad-clip is a maximum gradient norm: it must be positive (got {self.grad_clip})"),
            (self.early_stopping is None or self.early_stopping >= 1,
             f"--early-stopping is a patience in epochs: at least 1 (got {self.early_stopping})"),
            (self.reduce_on_plateau is None or self.reduce_on_plateau >= 1,
             f"--reduce-on-plateau is a patience in epochs: at least 1 (got {self.reduce_on_plateau})"),
            (self.max_minutes is None or self.max_minutes > 0,
             f"--max-minutes must be positive (got {self.max_minutes})"),
            (self.micro_batch is None or self.micro_batch >= 1, "micro_batch must be at least 1"),
            (self.step_size >= 1, f"step_size must be at least 1 epoch (got {self.step_size})"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1] (got {self.gamma})"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be at least 1 (got {self.eval_batch_size})"),
            (self.sampler in SAMPLERS, f"--sampler must be one of {', '.join(SAMPLERS)} (got {self.sampler!r})"),
            (isinstance(self.class_weights, str) or (isinstance(self.class_weights, list) and all(
                isinstance(w, int | float) and not isinstance(w, bool) and w > 0 for w in self.class_weights)),
             "--class-weights must be auto, none, a YAML/JSON file of class: weight, or a list of positive numbers"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.budget is not None:
            parse_duration(self.budget)
        from .options import parse_memory

        parse_memory(self.max_memory)
        return self

    @property
    def budget_seconds(self) -> float | None:
        return None if self.budget is None else parse_duration(self.budget)


def parse_duration(text: str | float) -> float:
    """'20m' / '90s' / '1.5h' / '2' (minutes) -> seconds."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h)?\s*", str(text).lower())
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"--budget expects a positive duration like 20m, 90s or 1.5h, got {str(text)[:40]!r}")
    unit = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[match.group(2) or "m"]
    seconds = float(match.group(1)) * unit
    if seconds > LONGEST_BUDGET:
        raise UserError(f"--budget {str(text)[:40]!r} is longer than {LONGEST_BUDGET // 86400} days: give a duration "
                        "like 20m, 90s or 1.5h")
    return seconds


LONGEST_BUDGET = 30 * 86400


def _weights_file(path: str, classes: list[str]) -> list[float]:
    from pathlib import Path

    from ..documents import read_document

    if not Path(path).exists():
        raise UserError(f"--class-weights: no such file {path} (or use auto / none)")
    mapping = read_document(path, "--class-weights file")
    if not isinstance(mapping, dict):
        raise UserError(f"--class-weights: {path} must map class names to weights")
    unknown = sorted(str(k) for k in mapping if str(k) not in classes)
    if unknown:
        raise UserError(f"--class-weights: {path} names unknown class {unknown[0]!r} (classes: {', '.join(classes)})")
    weights = {str(k): v for k, v in mapping.items()}
    bad = [k for k, v in weights.items() if not isinstance(v, int | float) or isinstance(v, bool) or v <= 0]
    if bad:
        raise UserError(f"--class-weights: the weight of {bad[0]!r} in {path} must be a positive number")
    return [float(weights.get(c, 1.0)) for c in classes]
