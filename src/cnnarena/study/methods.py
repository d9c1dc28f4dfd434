"""The report's Methods: each model's recipe as it ran, written so a student can paste it.

Everything comes from what the run saved (config.yaml, model.json, metrics.json, history.jsonl) and the study's
learning-rate comparison; nothing is restated from defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import rundir
from ..config import read_saved
from ..models.artefacts import read_meta

SCHEDULES = {"constant": "a constant learning rate", "cosine": "cosine decay", "onecycle": "a one-cycle schedule",
             "step": "step decay", "plateau": "decay on plateau"}


def model_methods(row: dict[str, Any], lr_result: dict[str, Any] | None, study: dict[str, Any],
                  resolution: str | None = None) -> str:
    """One paragraph: architecture and size, input resolution and why, optimizer and LR and how chosen, schedule,
    epochs or budget, batch size, augmentation, and for a backbone its frozen and unfrozen phases."""
    run_dir = Path(row["run_dir"])
    cfg = read_saved(run_dir)
    metrics = rundir.read_metrics(run_dir)
    meta = read_meta(run_dir).to_json()
    t = cfg.get("train") or {}
    if resolution:  # the study chose it for all the model's runs
        metrics = {**metrics, "input_size_reason": resolution}
    sentences = [_architecture(row, cfg, meta, metrics), _optimizer(t, lr_result, study),
                 _length(t, metrics, row), _augmentation(t)]
    if row["family"] == "pretrained":
        sentences.append(_phases(cfg, t, row, metrics))
    return " ".join(s for s in sentences if s)


def _architecture(row: dict[str, Any], cfg: dict[str, Any], meta: dict[str, Any], metrics: dict[str, Any]) -> str:
    h, w = (meta.get("data_size") or [0, 0])[:2]
    chans = "grayscale" if meta.get("in_chans") == 1 else "RGB"
    if row["family"] == "custom":
        from ..data.sources import BUILTIN

        why = ("--image-size" if cfg.get("image_size") else "the images' own size" if cfg.get("data") in BUILTIN
               else "files decoded at 64 px, the default --image-size, for speed")
        return (f"{row['model']} is a custom CNN ({row['params']:,} parameters) trained from random initialisation "
                f"on {h}×{w} px {chans} images ({why}).")
    extra = meta.get("extra") or {}
    source = extra.get("weights_source", "ImageNet weights") if cfg.get("pretrained", True) else "random weights"
    ih, iw = (meta.get("input_size") or [h, w])[:2]
    why = metrics.get("input_size_reason") or ("--input-size" if cfg.get("input_size") else "chosen from the data")
    return (f"{row['model']} is timm's {extra.get('timm_name', row['model'])} ({row['params']:,} parameters) "
            f"starting from {source}, with a new {metrics.get('classes', meta.get('num_classes', '?'))}-class head; "
            f"its {chans} {h}×{w} px images are resized to {ih}×{iw} px ({why}).")


def _optimizer(t: dict[str, Any], lr_result: dict[str, Any] | None, study: dict[str, Any]) -> str:
    opt = str(t.get("optimizer", "?"))
    details = []
    if opt == "sgd":
        details.append(f"momentum {t.get('momentum')}" + (", Nesterov" if t.get("nesterov") else ""))
    if t.get("weight_decay"):
        details.append(f"weight decay {t['weight_decay']:g}")
    if t.get("label_smoothing"):
        details.append(f"label smoothing {t['label_smoothing']:g}")
    if t.get("grad_clip"):
        details.append(f"gradients clipped at {t['grad_clip']:g}")
    shown = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}.get(opt, opt)
    how = "the recipe's"
    if lr_result:
        tried = ", ".join(lr_result["curves"])
        how = (f"the best of {tried} by final validation accuracy in the learning-rate comparison "
               f"({study.get('lr_epochs')} epochs on {100 * float(study.get('lr_fraction', 1)):g}% of the training "
               "set)")
    warmup = f" after {t['warmup_epochs']:g} warm-up epoch(s)" if t.get("warmup_epochs") else ""
    schedule = SCHEDULES.get(str(t.get("schedule")), str(t.get("schedule")))
    return (f"Optimizer {shown}" + (f" ({', '.join(details)})" if details else "") +
            f", learning rate {float(t.get('lr', 0)):g} ({how}), {schedule}{warmup}, batch size {t.get('batch_size')}.")


def _length(t: dict[str, Any], metrics: dict[str, Any], row: dict[str, Any]) -> str:
    budget = metrics.get("budget_seconds")
    limit = f"a {budget:g} s wall-clock budget (epochs planned to fit it)" if budget else \
        f"{t.get('epochs')} epochs"
    patience = t.get("early_stopping")
    early = f", early stopping after {patience} epochs without improvement" if patience else ""
    bf16 = metrics.get("precision") == "bf16 autocast"
    how = " in bfloat16 mixed precision (autocast; weights in float32)" if bf16 else ""
    return (f"It trained{how} under {limit}{early}: {metrics.get('epochs_run')} epochs in {row['train_seconds']:.0f} s "
            f"({metrics.get('stop_reason', 'completed')}), keeping the weights of epoch {metrics.get('best_epoch')} "
            f"(best {t.get('monitor', 'val_loss').replace('_', ' ')}).")


def _augmentation(t: dict[str, Any]) -> str:
    augment = t.get("augment") or {}
    parts = [k.replace("_", " ") if v is True else f"random erasing p={v}" if k == "erase" else
             f"{k.replace('_', ' ')} {v}" for k, v in augment.items() if v not in (None, False, 0, 0.0)]
    said = ("Augmentation: " + ", ".join(parts) + ".") if parts else "No data augmentation."
    if not t.get("tta"):
        return said
    shift = int(t.get("tta_shift") or 0)
    return said + (" Test predictions average the image and its mirror" +
                   (f", and both moved {shift} px left, right, up and down (10 views)" if shift else "") + ".")


def _phases(cfg: dict[str, Any], t: dict[str, Any], row: dict[str, Any], metrics: dict[str, Any]) -> str:
    frozen = int(cfg.get("freeze_epochs") or 0)
    boundary = metrics.get("phase_boundary")
    stages = row.get("stages")
    unfreeze = str(cfg.get("unfreeze", "all"))
    which = (f"all {stages} stages" if unfreeze == "all" else
             f"the last {unfreeze} of its {stages} stages" if stages else f"the last {unfreeze} stage(s)")
    bn = "BatchNorm statistics frozen" if cfg.get("finetune_bn", "frozen") == "frozen" else \
        "BatchNorm statistics updated"
    lr2 = float(t.get("lr", 0)) * float(cfg.get("finetune_lr_scale", 0.1))
    phase1 = (f"Phase 1 trained only the head on the frozen backbone for up to {frozen} epochs"
              + (" on features computed once (no augmentation)" if cfg.get("feature_cache", True)
                 and not t.get("augment") else "") + "; ")
    if not frozen:
        phase1 = "There was no frozen phase; "
    ran2 = boundary is None or metrics.get("epochs_run", 0) > boundary
    phase2 = (f"phase 2 unfroze {which} ({row['params_trainable']:,} parameters trainable), {bn}, at learning rate "
              f"{lr2:g} (× {cfg.get('finetune_lr_scale', 0.1):g})" if ran2
              else "the budget ran out before phase 2 (the backbone stayed frozen)")
    return phase1 + phase2 + "."
