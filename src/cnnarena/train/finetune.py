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
  the first unfrozen stage and runs only the last K stages + head. Both caches are exact (trunk_cache.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.loader import BatchLoader
from ..models.artefacts import load_weights, save_model
from ..models.base import Classifier
from ..models.stages import param_groups, set_trainable
from . import distributed
from .callbacks import Callback, MetricsLog, ProgressBar, TensorBoardLog, standard_callbacks
from .checkpoint import load_resume_point
from .features import FeatureLoader
from .loop import Phase, TrainResult, TrainState, fit
from .options import BN_MODES, parse_bn_mode, parse_unfreeze  # noqa: F401 - re-exported
from .trunk_cache import (
    ChargeCacheFill,
    TailNet,
    compute_features,
    is_constant_in_training,
    pass_batch,
    sample_images,
    split_for_cache,
)

log = logging.getLogger(__name__)



def fine_tune(model: Classifier, cfg, train_loader: BatchLoader, val_loader: BatchLoader,
              run_dir: Path, extra: Sequence[Callback] = ()) -> TrainResult:
    """Both phases, resuming a killed run; leaves the model on phase 2's best weights (phase 1's when the time
    budget ran out in phase 1), with the freeze state it ended training in."""
    t = cfg.train
    last = parse_unfreeze(cfg.unfreeze)  # user errors before any training
    bn_frozen = parse_bn_mode(cfg.finetune_bn)
    cache = cfg.feature_cache and not t.augment.active
    checkpoints = Path(run_dir) / "checkpoints"
    set_trainable(model, 0, bn_frozen=bn_frozen)
    phase1 = _finished_phase1(checkpoints)
    if phase1 is None:
        writes = distributed.is_main()  # under torchrun, rank 0 alone writes the run directory
        logs = [MetricsLog(run_dir), *([TensorBoardLog(run_dir)] if t.tensorboard else []), ProgressBar()]
        state1 = train_head(model, dataclasses.replace(t, epochs=cfg.freeze_epochs), train_loader, val_loader,
                            [*(logs if writes else []), *extra], cache=cache)
        earlier, best1 = state1.history, state1.best_epoch
        # the history travels with the weights: a killed run resumes after phase 1 from these two files
        if writes:
            save_model(model, checkpoints / "phase1", {"epoch": len(earlier), "phase": "frozen",
                                                       "history": earlier, "best_epoch": best1})
    else:
        earlier, best1 = phase1
        load_weights(model, checkpoints / "phase1")
        log.info(f"resuming {run_dir}: phase 1 (frozen, {len(earlier)} epochs) already done")

    # --max-minutes is one budget for the whole run: phase 2 gets what phase 1 left
    phase2 = Phase("fine-tune", tuple(earlier))
    if t.max_minutes is not None and phase2.seconds_before > 60 * t.max_minutes:
        return TrainResult(earlier, best1, f"time budget of {t.max_minutes:g} minutes reached in phase 1 "
                                           "(frozen backbone)", phase_boundary=len(earlier))
    # phase 2 draws from freshly seeded RNGs, so a run resumed after phase 1 trains exactly like one that was not
    torch.manual_seed(t.seed + 1)
    train_loader.generator.manual_seed(t.seed + 1)
    set_trainable(model, last, bn_frozen=bn_frozen)
    lr2 = t.lr * cfg.finetune_lr_scale
    warmup = t.warmup_epochs if cfg.finetune_warmup is None else cfg.finetune_warmup
    resume = load_resume_point(model, checkpoints)  # phase 2's Checkpoint alone writes one
    if resume is not None:
        log.info(f"resuming {run_dir}: phase 2 after epoch {resume['epoch']}")
    state2 = train_unfrozen(model, dataclasses.replace(t, lr=lr2, warmup_epochs=warmup), train_loader, val_loader,
                            [*standard_callbacks(t, run_dir), *extra], param_groups(model, lr2, cfg.layer_decay),
                            cache=cache,
                            phase=phase2, resume=resume)
    return TrainResult(earlier + state2.history, state2.best_epoch + len(earlier), state2.stop_reason,
                       phase_boundary=len(earlier))


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
               callbacks: Sequence[Callback] = (), *, cache: bool = True) -> TrainState:
    """Phase 1: the head alone behind the frozen backbone; on cached features when `cache` and exact."""
    net = model.net
    model.to(train_loader.device)
    phase = Phase("frozen", fills_budget=False)  # under --budget, phase 2 gets what phase 1 leaves
    exact = not cache or is_constant_in_training(net, net.backbone, sample_images(model, train_loader))
    if not exact:
        log.info("[frozen] features not cached: the backbone's output differs between training and eval mode")
    if not cache or not exact:
        return fit(model, train_loader, val_loader, cfg, callbacks=callbacks, phase=phase)
    t0 = time.perf_counter()
    train_feats = compute_features(model, train_loader.images, pass_batch(cfg), train_loader.device,
                                   channels_last=cfg.channels_last)
    val_feats = compute_features(model, val_loader.images, pass_batch(cfg), val_loader.device,
                                 channels_last=cfg.channels_last)
    seconds = time.perf_counter() - t0
    log.info(f"[frozen] backbone features computed once in {seconds:.1f}s")
    return fit(model, FeatureLoader.mirroring(train_loader, train_feats),
               FeatureLoader.mirroring(val_loader, val_feats), dataclasses.replace(cfg, channels_last=False),
               callbacks=[ChargeCacheFill(seconds, "feature_seconds"), *callbacks], phase=phase,
               net=TailNet(net, []))


# --- phase 2 ---------------------------------------------------------------------------------------------

def train_unfrozen(model: Classifier, cfg, train_loader: BatchLoader, val_loader: BatchLoader,
                   callbacks: Sequence[Callback], groups: list[dict], *, cache: bool = True,
                   phase: Phase = Phase("fine-tune"), resume: dict | None = None) -> TrainState:
    """Phase 2: the unfrozen stages + head; only the tail runs when the trunk in front of it can be cached.
    `resume`: the trainer state of an interrupted phase 2 (the model already on its last weights)."""
    model.to(train_loader.device)
    split = split_for_cache(model, train_loader, val_loader) if cache else None
    if isinstance(split, str):
        log.info(f"[fine-tune] frozen trunk not cached: {split}")
    if split is None or isinstance(split, str):
        return fit(model, train_loader, val_loader, cfg, callbacks=callbacks, param_groups=groups, phase=phase,
                   resume=resume)
    trunk, tail = split
    t0 = time.perf_counter()
    train_acts = compute_features(model, train_loader.images, pass_batch(cfg), train_loader.device, trunk,
                                  cfg.channels_last)
    val_acts = compute_features(model, val_loader.images, pass_batch(cfg), val_loader.device, trunk,
                                cfg.channels_last)
    seconds = time.perf_counter() - t0
    log.info(f"[fine-tune] frozen trunk ({len(trunk)} modules, up to {trunk[-1][0]}) computed once in "
             f"{seconds:.1f}s ({(train_acts.nbytes + val_acts.nbytes) / 2**20:.0f} MiB); training "
             f"{len(tail)} modules from {tail[0][0]} + head")
    return fit(model, FeatureLoader.mirroring(train_loader, train_acts, cfg.channels_last),
               FeatureLoader.mirroring(val_loader, val_acts, cfg.channels_last), cfg,
               callbacks=[ChargeCacheFill(seconds, "trunk_seconds"), *callbacks], param_groups=groups, phase=phase,
               resume=resume, net=TailNet(model.net, tail))
