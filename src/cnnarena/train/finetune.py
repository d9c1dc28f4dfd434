"""Transfer learning in the two phases the reports used (fastai's fine_tune(epochs, freeze_epochs)).

Phase 1 trains the head with the backbone frozen (its BatchNorm in eval mode). Phase 2 unfreezes the
last K stages (or all) and continues at a lower learning rate, with its own early stopping. One
history, the boundary marked; the model at the boundary is kept as checkpoints/phase1. A killed run
resumes: after phase 1 from checkpoints/phase1, inside phase 2 from its last epoch's checkpoint.

Three things make it fast and smooth:
- BatchNorm stays in eval mode in phase 2 too (`finetune_bn="frozen"`, Keras' advice): the unfrozen
  layers start from exactly the features the head was trained on, instead of features normalised with
  the batch statistics of a new domain, which threw validation accuracy from 0.73 back to 0.39.
- Without augmentation, phase 1 trains the head on backbone features computed once.
- Without augmentation and with `--unfreeze K`, phase 2 computes once what the frozen trunk hands to
  the first unfrozen stage and runs only the last K stages + head. Both caches are exact: they are used
  only when the cached part is checked to give the same output in training as in eval mode, and their
  loaders draw the same batches in the same order as the slow path.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..data.loader import BatchLoader
from ..errors import UserError
from ..models.base import Classifier
from ..models.pretrained import (
    Unit,
    apply_batchnorm_rule,
    backbone_chain,
    compute_features,
    constant_prefix,
    freeze_backbone,
    is_constant_in_training,
    param_groups,
    run_chain,
    set_batchnorm_frozen,
    unfreeze,
)
from .callbacks import Callback, Checkpoint, MetricsLog, ProgressBar, standard_callbacks
from .checkpoint import load_resume_point, load_weights, save_model
from .features import FeatureLoader
from .loop import TrainState, fit

BN_MODES = ("frozen", "train")
CACHE_MEMORY_SHARE = 0.4  # of the memory available now: more than this and the slow path runs instead


def parse_unfreeze(value: str | int | None) -> int | None:
    """'all' -> None (every stage), '2' -> the last 2 stages."""
    if value is None or str(value).lower() == "all":
        return None
    try:
        k = int(value)
    except ValueError:
        raise UserError(f"--unfreeze must be a number of stages or 'all', got {value!r}") from None
    if k < 1:
        raise UserError("--unfreeze must be at least 1 (or 'all')")
    return k


def parse_bn_mode(value: str) -> bool:
    """'frozen' -> True (BatchNorm keeps its ImageNet statistics in phase 2), 'train' -> False."""
    if value not in BN_MODES:
        raise UserError(f"--finetune-bn must be one of {', '.join(BN_MODES)}, got {value!r}")
    return value == "frozen"


def fine_tune(model: Classifier, cfg, train_loader: BatchLoader, val_loader: BatchLoader, split, callbacks,
              run_dir: Path) -> tuple[TrainState, int]:
    """Returns (combined state, number of phase-1 epochs) and leaves the model on phase 2's best weights."""
    t = cfg.train
    last = parse_unfreeze(cfg.unfreeze)  # user errors before any training
    bn_frozen = parse_bn_mode(cfg.finetune_bn)
    cache = cfg.feature_cache and not t.augment.active
    progress = any(isinstance(cb, ProgressBar) for cb in callbacks)

    checkpoints = Path(run_dir) / "checkpoints"
    freeze_backbone(model)
    set_batchnorm_frozen(model, bn_frozen)
    phase1 = _finished_phase1(checkpoints)
    messages: list[str] = []
    if phase1 is None:
        phase1_cfg = dataclasses.replace(t, epochs=cfg.freeze_epochs)
        phase1_callbacks: list[Callback] = [MetricsLog(run_dir)] + ([ProgressBar()] if progress else [])
        state1 = train_head(model, phase1_cfg, train_loader, val_loader, phase1_callbacks, cache=cache,
                            progress=progress)
        earlier, best1, messages = state1.history, state1.best_epoch, state1.messages
        # the history travels with the weights: a killed run resumes after phase 1 from these two files
        save_model(model, checkpoints / "phase1", {"epoch": len(earlier), "phase": "frozen", "history": earlier,
                                                   "best_epoch": best1})
    else:
        earlier, best1 = phase1
        load_weights(model, checkpoints / "phase1")
        print(f"resuming {run_dir}: phase 1 (frozen, {len(earlier)} epochs) already done", file=sys.stderr)

    # --max-minutes is one budget for the whole run: phase 2 gets what phase 1 left
    seconds1 = sum(row["epoch_seconds"] for row in earlier)
    if t.max_minutes is not None and seconds1 > 60 * t.max_minutes:
        state = TrainState(model, None, None, t, train_loader.batch_size, history=earlier, best_epoch=best1,
                           messages=messages, stop_reason=f"time budget of {t.max_minutes:g} minutes reached "
                                                          "in phase 1 (frozen backbone)")
        return state, len(earlier)
    # phase 2 draws from freshly seeded RNGs, so a run resumed after phase 1 trains exactly like one that was not
    torch.manual_seed(t.seed + 1)
    train_loader.generator.manual_seed(t.seed + 1)
    unfreeze(model, last)
    lr2 = t.lr * cfg.finetune_lr_scale
    warmup = t.warmup_epochs if cfg.finetune_warmup is None else cfg.finetune_warmup
    phase2_cfg = dataclasses.replace(t, lr=lr2, warmup_epochs=warmup)
    resume, resume_best = load_resume_point(model, checkpoints)  # phase 2's Checkpoint alone writes one
    if resume is not None:
        print(f"resuming {run_dir}: phase 2 after epoch {resume['epoch']}", file=sys.stderr)
    phase2_callbacks = standard_callbacks(t, run_dir, progress, earlier)
    state2 = train_unfrozen(model, phase2_cfg, train_loader, val_loader, phase2_callbacks,
                            param_groups(model, lr2, cfg.layer_decay), cache=cache, progress=progress,
                            first_epoch_label=len(earlier), resume=resume, resume_best=resume_best,
                            seconds_before=seconds1)
    state2.history = earlier + state2.history
    state2.best_epoch += len(earlier)
    state2.messages = messages + state2.messages
    return state2, len(earlier)


def _finished_phase1(checkpoints: Path) -> tuple[list[dict], int] | None:
    """(history, best epoch) of phase 1 when an earlier attempt of this run finished it (checkpoints/phase1.*),
    else None."""
    try:
        meta = json.loads((checkpoints / "phase1.json").read_text())
    except (OSError, ValueError):
        return None
    history = meta.get("history")
    ok = isinstance(history, list) and (checkpoints / "phase1.safetensors").exists()
    return (history, meta.get("best_epoch", len(history))) if ok else None


# --- phase 1 ---------------------------------------------------------------------------------------------

def train_head(model: Classifier, cfg, train_loader: BatchLoader, val_loader: BatchLoader,
               callbacks: Sequence[Callback] = (), *, cache: bool = True, progress: bool = False) -> TrainState:
    """Phase 1: the head alone behind the frozen backbone; on cached features when `cache` and exact."""
    net = model.net
    model.to(train_loader.device)
    exact = not cache or is_constant_in_training(net, net.backbone, _sample(model, train_loader))
    if not cache or not exact:
        state = fit(model, train_loader, val_loader, cfg, callbacks=list(callbacks), phase="frozen")
        if not exact:
            state.log("[frozen] features not cached: the backbone's output differs between training and eval mode")
        return state
    t0 = time.perf_counter()
    train_feats = compute_features(model, train_loader.images, _pass_batch(cfg), train_loader.device,
                                   channels_last=cfg.channels_last)
    val_feats = compute_features(model, val_loader.images, _pass_batch(cfg), val_loader.device,
                                 channels_last=cfg.channels_last)
    seconds = time.perf_counter() - t0
    if progress:
        print(f"[frozen] backbone features computed once in {seconds:.1f}s", file=sys.stderr)
    head_model = _TailNet(net, [])
    state = fit(head_model, FeatureLoader.mirroring(train_loader, train_feats),
                FeatureLoader.mirroring(val_loader, val_feats), dataclasses.replace(cfg, channels_last=False),
                callbacks=[_ChargeCacheFill(seconds, "feature_seconds"), *callbacks], phase="frozen")
    state.model = model
    return state


# --- phase 2 ---------------------------------------------------------------------------------------------

def train_unfrozen(model: Classifier, cfg, train_loader: BatchLoader, val_loader: BatchLoader,
                   callbacks: Sequence[Callback], groups: list[dict], *, cache: bool = True,
                   progress: bool = False, first_epoch_label: int = 0, resume: dict | None = None,
                   resume_best: dict[str, torch.Tensor] | None = None, seconds_before: float = 0.0) -> TrainState:
    """Phase 2: the unfrozen stages + head; only the tail runs when the trunk in front of it can be cached.
    `resume` / `resume_best`: trainer state and best whole-model weights of an interrupted phase 2;
    `seconds_before`: training time already spent (phase 1), counted against the time budget."""
    model.to(train_loader.device)
    split = _split_for_cache(model, train_loader, val_loader) if cache else None
    if isinstance(split, str) or split is None:
        state = fit(model, train_loader, val_loader, cfg, callbacks=list(callbacks), param_groups=groups,
                    phase="fine-tune", first_epoch_label=first_epoch_label, resume=resume,
                    resume_best=resume_best, seconds_before=seconds_before)
        if isinstance(split, str):
            state.log(f"[fine-tune] frozen trunk not cached: {split}")
        return state
    trunk, tail = split
    t0 = time.perf_counter()
    train_acts = compute_features(model, train_loader.images, _pass_batch(cfg), train_loader.device, trunk,
                                  cfg.channels_last)
    val_acts = compute_features(model, val_loader.images, _pass_batch(cfg), val_loader.device, trunk,
                                cfg.channels_last)
    seconds = time.perf_counter() - t0
    message = (f"[fine-tune] frozen trunk ({len(trunk)} modules, up to {trunk[-1][0]}) computed once in "
               f"{seconds:.1f}s ({(train_acts.nbytes + val_acts.nbytes) / 2**20:.0f} MiB); training "
               f"{len(tail)} modules from {tail[0][0]} + head")
    if progress:
        print(message, file=sys.stderr)
    tail_model = _TailNet(model.net, tail)
    best_tail = None
    if resume_best is not None:  # fit keeps best weights of the module it trains: the tail's share of them
        last = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(resume_best)
        best_tail = {k: v.detach().clone() for k, v in tail_model.state_dict().items()}
        model.load_state_dict(last)
    whole = [_WholeModel(cb, model) if isinstance(cb, Checkpoint) else cb for cb in callbacks]
    state = fit(tail_model, FeatureLoader.mirroring(train_loader, train_acts, cfg.channels_last),
                FeatureLoader.mirroring(val_loader, val_acts, cfg.channels_last), cfg,
                callbacks=[_ChargeCacheFill(seconds, "trunk_seconds"), *whole], param_groups=groups,
                phase="fine-tune", first_epoch_label=first_epoch_label, resume=resume, resume_best=best_tail,
                seconds_before=seconds_before)
    state.model = model
    return state


def _split_for_cache(model: Classifier, train_loader: BatchLoader,
                     val_loader: BatchLoader) -> tuple[list[Unit], list[Unit]] | str | None:
    """(trunk, tail) when caching the trunk is exact and fits in memory; a reason when not; None when the
    whole backbone trains (nothing to cache)."""
    net = model.net
    sample = _sample(model, train_loader)
    chain = backbone_chain(net.backbone, sample)
    if chain is None:
        return f"'{model.meta.name}' does not run its modules in a plain chain"
    with _mode(net, True):
        cut = constant_prefix(chain)
    if cut == 0:
        return None
    if cut == len(chain):
        return "nothing in the backbone trains"
    trunk, tail = chain[:cut], chain[cut:]
    if not is_constant_in_training(net, lambda x: run_chain(trunk, x), sample):
        return "its output differs between training and eval mode"
    with torch.no_grad(), _mode(net, False):
        per_image = run_chain(trunk, sample[:1]).numel() * 4  # float32
    need = per_image * (train_loader.num_samples + val_loader.num_samples)
    budget = _memory_budget(train_loader.device)
    if need > budget:
        return f"its activations need {need / 2**30:.1f} GiB, more than {budget / 2**30:.1f} GiB available"
    return trunk, tail


class _TailNet(nn.Module):
    """The last units of a backbone chain + the head, sharing their modules with the real model."""

    def __init__(self, net: nn.Module, units: Sequence[Unit]) -> None:
        super().__init__()
        self.tail = nn.ModuleList(module for _, module in units)
        self.head = net.head
        self.bn_frozen = net.bn_frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.tail:
            x = module(x)
        return self.head(x.flatten(1) if x.dim() > 2 else x)

    def train(self, mode: bool = True) -> _TailNet:
        super().train(mode)
        if mode:  # the same BatchNorm rule as PretrainedNet
            apply_batchnorm_rule(self.tail.modules(), self.bn_frozen)
        return self


class _WholeModel(Callback):
    """Lets Checkpoint save the whole Classifier while fit() trains only its tail."""

    def __init__(self, inner: Callback, model: Classifier) -> None:
        self.inner, self.model = inner, model

    def _call(self, hook: str, s: TrainState) -> None:
        trained, s.model = s.model, self.model
        try:
            getattr(self.inner, hook)(s)
        finally:
            s.model = trained

    def on_train_begin(self, s: TrainState) -> None:
        self._call("on_train_begin", s)

    def on_epoch_end(self, s: TrainState) -> None:
        self._call("on_epoch_end", s)

    def on_epoch_final(self, s: TrainState) -> None:
        self._call("on_epoch_final", s)

    def on_train_end(self, s: TrainState) -> None:
        self._call("on_train_end", s)


@contextmanager
def _mode(net: nn.Module, training: bool) -> Iterator[None]:
    was = net.training
    net.train(training)
    try:
        yield
    finally:
        net.train(was)


def _sample(model: Classifier, loader: BatchLoader, n: int = 4) -> torch.Tensor:
    """A few normalised training images at network resolution, for the exactness checks."""
    with torch.no_grad():
        return model.adapter(loader.images[:n].float().div(255))


def _pass_batch(cfg) -> int:
    """Batch size of the one-off cache passes: small batches run faster on a CPU (cache locality; measured at
    64 px: 690 img/s at 32, 600 at 64, 500 at 128, 380 at 256), and the training batch size when smaller."""
    return min(cfg.batch_size, 64)


def _memory_budget(device: torch.device) -> float:
    if device.type == "cuda":
        return CACHE_MEMORY_SHARE * torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration, ValueError):
        available = 4 * 2**30
    return CACHE_MEMORY_SHARE * available


class _ChargeCacheFill(Callback):
    """The one-off pass that filled a cache is training time too: charged to the first epoch this process
    trains (the one after the resume point when a killed run resumes and fills the cache again), before the
    other callbacks (history files, progress, time budget) see it."""

    def __init__(self, seconds: float, key: str) -> None:
        self.seconds, self.key, self.charged = seconds, key, False

    def on_epoch_end(self, s: TrainState) -> None:
        if self.charged:
            return
        self.charged = True
        row = s.history[-1]
        seen = row["images_per_second"] * row["epoch_seconds"]
        row["epoch_seconds"] = round(row["epoch_seconds"] + self.seconds, 3)
        row[self.key] = round(self.seconds, 3)
        row["images_per_second"] = round(seen / max(row["epoch_seconds"], 1e-9), 1)
        s.train_seconds += self.seconds
