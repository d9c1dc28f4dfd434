"""One run, start to finish: data -> split -> model -> fit -> evaluate -> files in the run directory.

A run directory holds everything needed to understand, resume and reuse the run:
config.yaml, split.json, history.csv/.jsonl, checkpoints/, model.safetensors + model.json,
metrics.json, predictions.csv and plots/. Re-running into the same directory resumes it.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import rundir
from .config import RunConfig, read_saved
from .data.augment import build_augment
from .data.augment_spec import check_fits
from .data.dataset import ImageSet, Source
from .data.health import check as check_health
from .data.health import leaked_pairs
from .data.loader import BatchLoader
from .data.sources import load_data
from .data.split import Split, load_manifest, make_split, subsample, write_manifest
from .evaluate.inference import applied_shift
from .evaluate.metrics import score_images
from .files import atomic_write_text
from .models.artefacts import save_model
from .models.base import Classifier, count_parameters
from .models.registry import check_model_name, create_model
from .report import plots
from .train.callbacks import Callback, standard_callbacks
from .train.checkpoint import load_resume_point
from .train.loop import TrainResult, fit, resolve_device, seed_everything
from .train.precision import precision_name, uses_bf16

log = logging.getLogger(__name__)


def resolve_split(cfg: RunConfig, source: Source, run_dir: Path | None) -> tuple[Split, list[list[str]] | None,
                                                                                 list[str]]:
    """The run's own split.json (when resuming), else --split, else a new seeded split that keeps each group of
    duplicates on one side; the groups it kept; and what to tell the user (the data summary, a leak warning)."""
    own = run_dir / rundir.SPLIT if run_dir is not None else None
    if own is not None and own.exists() and has_trained(run_dir):  # a failed start's split is not the run's
        return load_manifest(own, source), None, []
    if cfg.split:
        split = load_manifest(Path(cfg.split), source)
        return split, None, leak_warnings(split, cfg.split, cfg.data)
    return new_split(cfg, source)


def new_split(cfg: RunConfig, source: Source) -> tuple[Split, list[list[str]], list[str]]:
    """A stratified, seeded, leakage-free split after the fast data checks (with the lines to tell the user)."""
    health = check_health(source)
    split = make_split(source, val_frac=cfg.val_frac, test_frac=cfg.test_frac, seed=cfg.split_seed,
                       groups=health.groups)
    messages = [health.summary]
    if source.test is not None:  # the groups keep the pool's copies together; copies of the official test set
        messages += leak_warnings(split, "the new split", cfg.data)  # cannot be moved, only reported
    return split, [[source.pool.ids[i] for i in g] for g in health.groups], messages


def tell(messages: list[str]) -> None:
    """Log what resolve_split and prepare found: warnings as warnings, the rest as information."""
    for message in messages:
        (log.warning if message.startswith("warning:") else log.info)(message)


def leak_warnings(split: Split, what: str, data: str) -> list[str]:
    leaked = leaked_pairs(split)
    return [f"warning: {what} leaks: {leaked} exact-duplicate pair(s) across train/val/test "
            f"(`cnnarena doctor {data} --split SPLIT.json` lists them)"] if leaked else []


@dataclass
class Prepared:
    """What a run trains on, decided before any model exists: `train` (a fraction of the split's training set
    when asked) and cfg with its recipe fitted to that many images; `messages` (the data summary, leak warnings,
    what the fitting changed) are for after the model is built, so that a bad model is reported alone."""

    cfg: RunConfig
    source: Source
    split: Split
    train: ImageSet
    groups: list[list[str]] | None = None  # duplicate groups a new split kept on one side (ids)
    messages: list[str] = field(default_factory=list)
    resolution: str | None = None  # why a backbone runs at the size it does on photos (None: the usual rule)


def prepare(cfg: RunConfig, run_dir: Path | None = None) -> Prepared:
    """Data, split, training fraction and the recipe fitted to the data: the pipeline `train` and `lr-find`
    share. The config is copied, not changed."""
    from .data.sources import file_listing
    from .models import photo_resolution

    cfg = copy.deepcopy(cfg)
    saved = read_saved(run_dir).get("image_size") if run_dir is not None and rundir.has_trained(run_dir) \
        else None
    choice = photo_resolution.for_run(cfg, lambda: file_listing(cfg.data), saved,
                                      lambda: resolve_device(cfg.train.device))
    if choice is not None:  # the photos are decoded at the size the backbone runs at, and config.yaml says so
        cfg.image_size = choice.size
    source = load_data(cfg)
    check_fits(cfg.train.augment, min(source.pool.size))
    split, groups, messages = resolve_split(cfg, source, run_dir)
    train_set = subsample(split.train, cfg.fraction, cfg.train.seed)
    cfg.train, note = cfg.train.fit_to_data(len(train_set))
    cfg.train = cfg.train.resolve_class_weights(train_set.class_counts(), train_set.classes)
    from .data.curation import describe

    curated = describe(source.curation)
    return Prepared(cfg, source, split, train_set, groups, [*([curated] if curated else []), *messages,
                                                            *([note] if note else [])],
                    choice.reason if choice is not None else None)


def default_run_dir(cfg: RunConfig) -> Path:
    return rundir.default_run_dir(cfg.data, cfg.model)


def build_model(cfg: RunConfig, split: Split) -> Classifier:
    train = split.train
    return create_model(cfg.model, num_classes=len(train.classes), in_chans=train.channels, data_size=train.size,
                        classes=train.classes, pretrained=cfg.pretrained,
                        weights=Path(cfg.weights) if cfg.weights else None, input_size=cfg.input_size,
                        head_hidden=tuple(cfg.head_hidden), head_dropout=cfg.head_dropout)


def train_run(cfg: RunConfig, run_dir: Path | None = None, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train and evaluate one run; returns metrics.json's content. A finished run with the same settings is
    returned as is, an unfinished one resumes; a run directory holding other settings is an error (one that never
    trained an epoch is not a run to protect: it starts over). One process writes a run directory at a time.
    callbacks: more training callbacks (a tuner's pruning), after the standard ones, in every phase."""
    from .train import distributed

    check_model_name(cfg.model)  # before the data and the run directory: a misspelt model waits for no decoding
    run_dir = Path(run_dir or cfg.out or default_run_dir(cfg))
    if not distributed.is_main():  # torchrun's other ranks train beside rank 0 and write nothing
        return _train_run(cfg, run_dir, callbacks)
    rundir.check_out(run_dir, "run")
    created = not run_dir.exists()
    with rundir.sole_writer(run_dir, "run"):  # another writer's directory is never touched: it holds the lock
        try:
            return _train_run(cfg, run_dir, callbacks)
        except BaseException:
            if created and not rundir.has_trained(run_dir):  # a failed start leaves no directory behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise


has_trained = rundir.has_trained  # older callers import it from here


def _train_run(cfg: RunConfig, run_dir: Path, extra: Sequence[Callback] = ()) -> dict[str, Any]:
    from .train import distributed

    t_start = time.perf_counter()
    ranks = distributed.world()
    main = ranks is None or ranks.is_main
    if not main:
        distributed.barrier()  # rank 0 sets the run directory up (split, config) first
    prep = prepare(cfg, run_dir)
    cfg, split, train_set = prep.cfg, prep.split, prep.train
    rundir.check_same_settings(run_dir, cfg.to_dict())
    if (run_dir / rundir.METRICS).exists():
        if main:
            distributed.barrier()
        return rundir.read_metrics(run_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / rundir.CONFIG)  # first: it is what makes the directory a run of ours
        write_manifest(split, run_dir / rundir.SPLIT, source_name=prep.source.name, seed=cfg.split_seed,
                       groups=prep.groups, curation=prep.source.curation)
        distributed.barrier()
    data_seconds = time.perf_counter() - t_start

    seed_everything(cfg.train.seed, cfg.train.deterministic)
    device = resolve_device(distributed.device_for(cfg.train.device, ranks))
    model = build_model(cfg, split)
    memory = plan_memory(model, cfg, split, device)
    if memory is not None:
        cfg.train = dataclasses.replace(cfg.train, micro_batch=memory.micro_batch if memory.micro_batch <
                                        cfg.train.batch_size else None, eval_batch_size=memory.eval_batch)
    if main:
        _say_what_trains(model, cfg, prep.messages, memory, ranks, device, prep.resolution)
    result = _train_model(model, cfg, *_loaders(cfg, train_set, split, device, ranks), run_dir, extra)
    if not main:  # rank 0 evaluates and writes the run; the others are done
        distributed.barrier()
        return {"rank": ranks.rank, "epochs_run": len(result.history)}
    with distributed.alone():  # the test evaluation is rank 0's alone: no collective waits for the others
        metrics = finish_run(model, cfg, split, train_set, result, run_dir, data_seconds=data_seconds,
                             wall_seconds=time.perf_counter() - t_start, memory=memory,
                             input_size_reason=input_size_reason(model, cfg, prep.resolution),
                             curation=prep.source.curation)
    distributed.barrier()
    return metrics


def _say_what_trains(model: Classifier, cfg: RunConfig, messages: list[str], memory, ranks, device,
                     resolution: str | None = None) -> None:
    bf16 = uses_bf16(device, cfg.train.amp, model.meta.family) and cfg.train.amp is None
    said = ["precision: bf16 autocast, the default for this model on this device (--no-amp: float32)"] \
        if bf16 else []
    tell([*model_lines(model, cfg, resolution), *said, *messages, *([memory.note] if memory and memory.note else [])])
    if ranks is not None:
        log.info(f"data parallel: {ranks.size} processes ({'NCCL' if device.type == 'cuda' else 'gloo'}), each "
                 f"with 1/{ranks.size} of every batch of {cfg.train.batch_size}")
    ignored = [flag for flag, value in (("--freeze-epochs", cfg.freeze_epochs), ("--input-size", cfg.input_size),
                                        ("--head-hidden", cfg.head_hidden), ("--weights", cfg.weights)) if value]
    if not model.meta.is_pretrained and ignored:
        log.info(f"note: {', '.join(ignored)} apply to pretrained backbones: ignored for the custom CNN "
                 f"{model.meta.name}")


def _loaders(cfg: RunConfig, train_set, split: Split, device: torch.device, ranks) -> tuple[BatchLoader, BatchLoader]:
    t = cfg.train
    shard = (ranks.rank, ranks.size) if ranks is not None else None
    train_loader = BatchLoader(train_set, t.batch_size, device=device, shuffle=True, augment=build_augment(t.augment),
                               seed=t.seed, channels_last=t.channels_last, balanced=t.sampler == "balanced",
                               shard=shard)
    val_loader = BatchLoader(split.val, t.eval_batch_size, device=device, channels_last=t.channels_last, shard=shard)
    return train_loader, val_loader


def _train_model(model: Classifier, cfg: RunConfig, train_loader: BatchLoader, val_loader: BatchLoader,
                 run_dir: Path, extra: Sequence[Callback]) -> TrainResult:
    """Two-phase fine-tuning, or one fit (resumed from the run's checkpoint when there is one)."""
    if model.meta.is_pretrained and cfg.freeze_epochs > 0:
        from .train.finetune import fine_tune

        return fine_tune(model, cfg, train_loader, val_loader, run_dir, extra)
    if model.meta.is_pretrained and cfg.pretrained:  # fine-tuning all at once: the same BatchNorm rule
        from .models.stages import set_trainable
        from .train.options import parse_bn_mode

        set_trainable(model, None, bn_frozen=parse_bn_mode(cfg.finetune_bn))
    resume = load_resume_point(model, run_dir / rundir.CHECKPOINTS)
    if resume is not None:
        log.info(f"resuming {run_dir} after epoch {resume['epoch']}")
    return fit(model, train_loader, val_loader, cfg.train,
               callbacks=[*standard_callbacks(cfg.train, run_dir), *extra], resume=resume).result()


def model_lines(model: Classifier, cfg: RunConfig, resolution: str | None = None) -> list[str]:
    """The run's first line: what trains, and at which resolution a backbone runs (chosen from the data unless
    --input-size says)."""
    meta = model.meta
    if not meta.is_pretrained:
        return [f"model: {meta.name} (custom CNN) on {meta.data_size[0]}x{meta.data_size[1]} images"]
    how = input_size_reason(model, cfg, resolution)
    return [f"model: {meta.name} (pretrained) at {meta.input_size[0]}x{meta.input_size[1]} px ({how}"
            + ("" if cfg.input_size else "; --input-size overrides") + ")"]


def input_size_reason(model: Classifier, cfg: RunConfig, resolution: str | None) -> str | None:
    """Why a backbone runs at its input size (None for a custom CNN): metrics.json and the study's Methods say it."""
    meta = model.meta
    if not meta.is_pretrained:
        return None
    if resolution is not None:
        return resolution
    if cfg.input_size:
        return "--input-size"
    return f"chosen for {meta.data_size[0]}x{meta.data_size[1]} images"


def plan_memory(model: Classifier, cfg: RunConfig, split: Split, device: torch.device):
    """The memory plan of a CPU training (--max-memory, default a share of what is free, at most 4 GB); None when
    there is no cap (--max-memory none, or a GPU without an explicit --max-memory)."""
    from .machine import allocated_bytes
    from .train.memory_plan import default_budget, estimate, parse_memory, plan, with_shifted_views

    t = cfg.train
    budget = parse_memory(t.max_memory)
    if budget == 0 or (budget is None and device.type != "cpu"):
        return None
    if device.type != "cpu":
        log.info("note: --max-memory bounds the process's memory on the CPU; this run trains on "
                 f"{device.type}: not applied")
        return None
    sample = split.train.images[:2].float().div(255.0)
    if t.channels_last:
        sample = sample.contiguous(memory_format=torch.channels_last)
    shift = applied_shift(t.tta_shift, model.meta.data_size) if t.tta else 0
    est = with_shifted_views(estimate(model, sample, t.optimizer), model.meta.in_chans, model.meta.data_size, shift)
    return plan(est, t.batch_size, t.eval_batch_size, budget=budget or default_budget(), held=allocated_bytes(),
                what=f"{model.meta.name} at batch {t.batch_size}")


def finish_run(model: Classifier, cfg: RunConfig, split: Split, train_set, result: TrainResult, run_dir: Path, *,
               data_seconds: float, wall_seconds: float, memory=None,
               input_size_reason: str | None = None, curation: dict | None = None) -> dict[str, Any]:
    """Evaluate the best weights on the test split and write model, metrics, predictions and plots."""
    save_model(model, run_dir / "model", {"epoch": result.best_epoch})
    test = split.test
    t0 = time.perf_counter()
    t = cfg.train
    metrics, logits = score_images(model, test.images, test.labels, test.classes, batch_size=t.eval_batch_size,
                                   tta=t.tta, shift=t.tta_shift)
    eval_seconds = time.perf_counter() - t0
    total, trainable = count_parameters(model)
    history, best = result.history, result.best_epoch
    epochs_run = len(history)
    train_seconds = sum(r["epoch_seconds"] for r in history)
    metrics.update({
        "model": model.meta.name,
        "family": model.meta.family,
        "data": cfg.data,
        "params_total": total,
        "params_trainable_final": trainable,
        "model_file_bytes": (run_dir / rundir.MODEL_WEIGHTS).stat().st_size,
        "epochs_run": epochs_run,
        "best_epoch": history[best - 1]["epoch"] if best else None,
        # of the epoch whose weights were kept (the best by --monitor), not the highest of any epoch
        "best_val_accuracy": history[best - 1]["val_accuracy"] if best else None,
        "stop_reason": result.stop_reason or "completed all epochs",
        "train_seconds": round(train_seconds, 2),
        "seconds_per_epoch": round(train_seconds / max(1, epochs_run), 3),
        "data_seconds": round(data_seconds, 2),
        "eval_seconds": round(eval_seconds, 3),
        "wall_seconds": round(wall_seconds + eval_seconds, 2),
        "train_samples": len(train_set),
        "val_samples": len(split.val),
        "device": str(next(model.parameters()).device),
        "precision": precision_name(uses_bf16(next(model.parameters()).device, cfg.train.amp, model.meta.family)),
        "tta": cfg.train.tta,
        "tta_shift": applied_shift(cfg.train.tta_shift, test.size) if cfg.train.tta else 0,
        "phase_boundary": result.phase_boundary,
        "input_size": list(model.meta.input_size),
        "input_size_reason": input_size_reason,
        "budget_seconds": cfg.train.budget_seconds,
        "micro_batch": cfg.train.micro_batch,
        "memory_budget_gb": round(memory.budget / 2**30, 2) if memory else None,
        "memory_estimate_gb": round(memory.estimate / 2**30, 2) if memory else None,
        "peak_rss_gb": peak_rss_gb(),
        "curation": curation,
    })
    _write_predictions(run_dir / rundir.PREDICTIONS, test, logits)
    plot_dir = run_dir / "plots"
    plots.training_curves(history, plot_dir / "curves.png", result.phase_boundary,
                          title=f"{model.meta.name} on {cfg.data}")
    plots.confusion_matrices(metrics["confusion_matrix"], test.classes, plot_dir / "confusion_matrix.png")
    plots.top_mistakes(test.images, test.labels, logits, test.classes, plot_dir / "top_mistakes.png")
    if cfg.train.tensorboard:
        from .train.tensorboard_log import log_final

        log_final(run_dir, cfg.to_dict(), metrics)
    atomic_write_text(run_dir / rundir.METRICS, json.dumps(metrics, indent=1))
    return metrics


def _write_predictions(path: Path, test, logits: torch.Tensor) -> None:
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "true", "predicted", "confidence", "correct"])
        for sid, y, p, c in zip(test.ids, test.labels.tolist(), pred.tolist(), conf.tolist(), strict=True):
            w.writerow([sid, test.classes[y], test.classes[p], f"{c:.4f}", int(y == p)])


def peak_rss_gb() -> float | None:
    """This process's peak resident memory so far (a study's runs share one process: the largest of them)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def lr_range_test(values: dict[str, Any], *, start_lr: float, end_lr: float, steps: int, out: Path):
    """`cnnarena lr-find`: the data, split and recipe `train` would use, the range test, and its plot at `out`."""
    from .config import build_config
    from .report.lr_plot import plot_lr_find
    from .train.lr_finder import lr_find

    prep = prepare(build_config(None, values))  # the split, fraction and recipe fitted to the data
    tell(prep.messages)
    t = prep.cfg.train
    net = build_model(prep.cfg, prep.split)
    loader = BatchLoader(prep.train, t.batch_size, device=resolve_device(t.device), shuffle=True, seed=t.seed)
    result = lr_find(net, loader, t, start_lr=start_lr, end_lr=end_lr, steps=steps)
    result.plot = plot_lr_find(result, out)
    return result
