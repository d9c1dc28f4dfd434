"""Transfer learning in the two phases the reports used (fastai's fine_tune(epochs, freeze_epochs)).

Phase 1 trains the head with the backbone frozen (its BatchNorm in eval mode); without augmentation
it trains on features computed once. Phase 2 unfreezes the last K stages (or all) and continues at a
lower learning rate, with its own early stopping. One history, the boundary marked.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from torch import nn

from ..data.loader import BatchLoader
from ..models.base import Classifier
from ..models.pretrained import compute_features, freeze_backbone, param_groups, unfreeze
from .callbacks import Callback, Checkpoint, EarlyStopping, MetricsLog, ProgressBar, ReduceLROnPlateau
from .features import FeatureLoader
from .loop import TrainState, fit


def parse_unfreeze(value: str | int | None) -> int | None:
    """'all' -> None (every stage), '2' -> the last 2 stages."""
    from ..errors import UserError

    if value is None or str(value).lower() == "all":
        return None
    try:
        k = int(value)
    except ValueError:
        raise UserError(f"--unfreeze must be a number of stages or 'all', got {value!r}") from None
    if k < 1:
        raise UserError("--unfreeze must be at least 1 (or 'all')")
    return k


def fine_tune(model: Classifier, cfg, train_loader: BatchLoader, val_loader: BatchLoader, split, callbacks,
              run_dir: Path) -> tuple[TrainState, int]:
    """Returns (combined state, number of phase-1 epochs) and leaves the model on phase 2's best weights."""
    t = cfg.train
    progress = any(isinstance(cb, ProgressBar) for cb in callbacks)
    phase1_cfg = dataclasses.replace(t, epochs=cfg.freeze_epochs)
    freeze_backbone(model)
    phase1_callbacks: list[Callback] = [MetricsLog(run_dir)] + ([ProgressBar()] if progress else [])
    if not t.augment.active and cfg.feature_cache:
        state1 = _head_on_features(model, phase1_cfg, train_loader, val_loader, phase1_callbacks)
    else:
        state1 = fit(model, train_loader, val_loader, phase1_cfg, callbacks=phase1_callbacks, phase="frozen")
    earlier = state1.history

    unfreeze(model, parse_unfreeze(cfg.unfreeze))
    lr2 = t.lr * cfg.finetune_lr_scale
    phase2_cfg = dataclasses.replace(t, lr=lr2, warmup_epochs=t.warmup_epochs)
    phase2_callbacks: list[Callback] = [MetricsLog(run_dir, earlier), Checkpoint(run_dir)]
    if t.early_stopping:
        phase2_callbacks.append(EarlyStopping(t.early_stopping))
    if t.reduce_on_plateau:
        phase2_callbacks.append(ReduceLROnPlateau(t.reduce_on_plateau))
    if progress:
        phase2_callbacks.append(ProgressBar())
    state2 = fit(model, train_loader, val_loader, phase2_cfg, callbacks=phase2_callbacks,
                 param_groups=param_groups(model, lr2, cfg.layer_decay), phase="fine-tune",
                 first_epoch_label=len(earlier))
    state2.history = earlier + state2.history
    state2.best_epoch += len(earlier)
    state2.messages = state1.messages + state2.messages
    return state2, len(earlier)


def _head_on_features(model: Classifier, cfg, train_loader: BatchLoader, val_loader: BatchLoader,
                      callbacks) -> TrainState:
    """Phase 1 on cached features: the head sees exactly what it would behind the frozen backbone."""
    device = train_loader.device
    t0 = time.perf_counter()
    train_feats = compute_features(model, train_loader.images, batch_size=cfg.eval_batch_size, device=device)
    val_feats = compute_features(model, val_loader.images, batch_size=cfg.eval_batch_size, device=device)
    feature_seconds = time.perf_counter() - t0
    if callbacks and any(isinstance(cb, ProgressBar) for cb in callbacks):
        print(f"[frozen] backbone features computed once in {feature_seconds:.1f}s", file=sys.stderr)
    head = model.net.head
    train_f = FeatureLoader(train_feats, train_loader.labels, cfg.batch_size, device=device, shuffle=True,
                            seed=cfg.seed)
    val_f = FeatureLoader(val_feats, val_loader.labels, cfg.eval_batch_size, device=device)
    head_model = _HeadOnly(head)
    state = fit(head_model, train_f, val_f, dataclasses.replace(cfg, channels_last=False), callbacks=callbacks,
                phase="frozen")
    # The one-off feature pass is training time too: charge it to the first epoch.
    state.history[0]["epoch_seconds"] = round(state.history[0]["epoch_seconds"] + feature_seconds, 3)
    state.history[0]["feature_seconds"] = round(feature_seconds, 3)
    state.model = model
    return state


class _HeadOnly(nn.Module):
    """Wraps the head so fit() can treat it as a model (features in, logits out)."""

    def __init__(self, head) -> None:
        super().__init__()
        self.head = head

    def forward(self, x):
        return self.head(x)
