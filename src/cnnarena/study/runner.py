"""A study: many ordinary runs on one shared split, then the comparison.

Layout of a study directory:
  study.yaml, split.json           what was asked, and the one split every run uses
  lr/MODEL/lr=VALUE/               the learning-rate comparison runs
  runs/MODEL/f=FRACTION-s=SEED/    the final runs
  comparison.{md,csv,json}, plots/, report.html
Re-running a study skips finished runs (their metrics.json exists) and resumes unfinished ones.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import rundir
from ..config import read_saved
from ..data.sources import load_data
from ..data.split import load_manifest, write_manifest
from ..errors import UserError
from ..files import atomic_write_text
from ..machine import describe as describe_machine
from ..models.artefacts import load_model, saved_freeze_state
from ..models.base import Classifier, count_parameters
from ..report.comparison import write_comparison
from ..report.study_report import write_report
from ..run import new_split, tell, train_run
from ..rundir import base_model, model_dir
from ..train.callbacks import Callback
from ..train.loop import resolve_device
from . import answer, anytime, methods
from .config import StudyConfig, resolve_data, run_budget, run_config
from .measure import measure_model
from .stats import fraction_winners, mcnemar_exact, mean_std, ranking_key, tradeoffs, verdict

log = logging.getLogger(__name__)
_say = log.info


CallbacksFor = Callable[[Path], Sequence[Callback]]  # a run directory -> more callbacks for its training


def run_study(study: StudyConfig, callbacks_for: CallbacksFor | None = None) -> dict[str, Any]:
    """Every run of the study, then the comparison and the report; one process writes a study directory at a time.
    callbacks_for: more training callbacks for each run that trains (a tracker logging it live)."""
    with rundir.sole_writer(Path(study.out), "study"):
        if study.compare_curation:
            from .curation_compare import run_compared

            comparison = run_compared(study, lambda s: _run_study(s, callbacks_for))
            write_comparison(comparison, Path(study.out))  # again, with the difference
            write_report(comparison, Path(study.out))
            return comparison
        return _run_study(study, callbacks_for)


def train_job(job: Job, callbacks_for: CallbacksFor | None = None) -> dict[str, Any]:
    """train_run of the job, with callbacks_for's callbacks (closed after it, whatever happened)."""
    extra = list(callbacks_for(job.run_dir)) if callbacks_for else []
    try:
        return train_run(job.cfg, job.run_dir, callbacks=extra)
    finally:
        for callback in extra:
            callback.close()


def prepare_study(study: StudyConfig) -> tuple[str, Any, Path]:
    """(data, source, split manifest path): the study directory, study.yaml and the split every run shares."""
    out = Path(study.out)
    out.mkdir(parents=True, exist_ok=True)
    data = resolve_data(study.data)
    atomic_write_text(out / rundir.STUDY, yaml.safe_dump({**study.to_dict(), "data": data}, sort_keys=False))
    probe = run_config(study, data, study.models[0], out / rundir.SPLIT)
    source = load_data(probe)
    split_path = out / rundir.SPLIT
    if not split_path.exists():
        split, groups, messages = new_split(probe, source)
        tell(messages)
        write_manifest(split, split_path, source_name=source.name, seed=probe.split_seed, groups=groups,
                       curation=source.curation)
    return data, source, split_path


@dataclass(frozen=True)
class Job:
    """One training of the study: what it is (for the log), its config and its run directory."""

    key: str
    cfg: Any
    run_dir: Path
    model: str
    fraction: float | None = None  # final runs only
    seed: int | None = None


def lr_jobs(study: StudyConfig, data: str, split_path: Path) -> list[Job]:
    out = Path(study.out)
    return [Job(f"lr {model} {lr:g}", run_config(study, data, model, split_path, lr=lr, epochs=study.lr_epochs,
                                                   fraction=study.lr_fraction, early_stopping=None),
                out / "lr" / model_dir(model) / f"lr={lr:g}", model)
            for model in (study.lr_models or study.models[:1]) if study.lrs for lr in study.lrs]


def final_jobs(study: StudyConfig, data: str, split_path: Path, chosen_lr: dict[str, float]) -> list[Job]:
    out = Path(study.out)
    budget = run_budget(study)
    jobs = []
    for model in study.models:
        for fraction in sorted(study.fractions, reverse=True):
            for seed in range(study.seeds):
                extra: dict[str, Any] = {"seed": seed, "fraction": fraction}
                if model in chosen_lr:
                    extra["lr"] = chosen_lr[model]
                if fraction == 1.0 and budget is not None:
                    extra["budget"] = budget
                jobs.append(Job(f"{model} f={fraction:g} s={seed}", run_config(study, data, model, split_path,
                                                                              **extra),
                                out / "runs" / model_dir(model) / f"f={fraction:g}-s={seed}", model, fraction,
                                seed))
    return jobs


def missing_runs(study: StudyConfig) -> list[str]:
    """The run directories of the study that hold no finished run (the LR comparison's and the final ones)."""
    out = Path(study.out)
    dirs = [out / "lr" / model_dir(m) / f"lr={lr:g}" for m in (study.lr_models or study.models[:1]) if study.lrs
            for lr in study.lrs]
    dirs += [out / "runs" / model_dir(m) / f"f={f:g}-s={s}" for m in study.models for f in study.fractions
             for s in range(study.seeds)]
    return [str(d) for d in dirs if not (d / rundir.METRICS).exists()]


def _run_study(study: StudyConfig, callbacks_for: CallbacksFor | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = Path(study.out)
    data, source, split_path = prepare_study(study)
    _say(f"study of {len(study.models)} models on {data} -> {out}")
    study, resolutions = photo_sizes(study, data, split_path)

    lr_results = _lr_comparison(study, lr_jobs(study, data, split_path), callbacks_for)
    chosen_lr = {m: r["best_lr"] for m, r in lr_results.items()}

    runs: dict[str, dict[float, list[dict[str, Any]]]] = {}
    budget = run_budget(study)
    if budget is not None:
        each = "model and seed" if study.seeds > 1 else "model"
        _say(f"budget: {budget} of training per {each} on the whole training set")
    for job in final_jobs(study, data, split_path, chosen_lr):
        state = "done" if (job.run_dir / rundir.METRICS).exists() else "training"
        _say(f"[{job.model}] fraction {job.fraction:g} seed {job.seed}: {state}")
        metrics = train_job(job, callbacks_for)
        metrics["run_dir"] = str(job.run_dir)
        # what the run trained with, as it saved it: the batch size fitted to the data (a reused run's
        # cfg still holds the batch size asked for)
        train = _saved_config(job.run_dir).get("train") or {}
        metrics["batch_size"] = int(train.get("batch_size", job.cfg.train.batch_size))
        metrics["optimizer"] = str(train.get("optimizer", job.cfg.train.optimizer))
        runs.setdefault(job.model, {}).setdefault(job.fraction, []).append(metrics)

    comparison = summarise(study, data, source, runs, lr_results, out, resolutions)
    comparison["explanations"] = explanations(comparison["table"], source, out)
    comparison["study_seconds"] = round(time.perf_counter() - t0, 1)  # this invocation (reused runs are quick)
    final = [m for by_fraction in runs.values() for rs in by_fraction.values() for m in rs]
    comparison["runs_seconds"] = round(sum(m.get("wall_seconds", 0) for m in final)
                                       + sum(r.get("seconds", 0) for r in lr_results.values()), 1)
    write_comparison(comparison, out)
    write_report(comparison, out)
    return comparison


def photo_sizes(study: StudyConfig, data: str, split_path: Path) -> tuple[StudyConfig, dict[str, str]]:
    """Each backbone's resolution on photos, chosen once for all its runs (LR comparison, fractions, seeds) from
    the whole training set's budget, so that they compare at one size; a resumed study keeps the size its runs
    started with. (A copy of the study with image_size set, and the reasons.)"""
    import dataclasses

    from ..data.sources import file_listing
    from ..models import photo_resolution

    overrides = {m: dict(o) for m, o in study.overrides.items()}
    reasons: dict[str, str] = {}
    budget = run_budget(study)
    for model in study.models:
        cfg = run_config(study, data, model, split_path, **({"budget": budget} if budget else {}))
        first = Path(study.out) / "runs" / model_dir(model) / "f=1-s=0"
        saved = read_saved(first).get("image_size")
        choice = photo_resolution.for_run(cfg, lambda: file_listing(data), saved,
                                          lambda cfg=cfg: resolve_device(cfg.train.device))
        if choice is None:
            continue
        overrides[model] = {**overrides.get(model, {}), "image_size": choice.size}
        reasons[model] = choice.reason
        _say(f"[{model}] runs at {choice.size} px: {choice.reason}")
    return dataclasses.replace(study, overrides=overrides), reasons


def best_lr(curves: dict[float, list[dict[str, Any]]]) -> float:
    """The learning rate whose run ended with the highest validation accuracy, ties broken by lower loss."""
    return max(curves, key=lambda lr: (curves[lr][-1]["val_accuracy"], -curves[lr][-1]["val_loss"]))


def _lr_comparison(study: StudyConfig, jobs: list[Job], callbacks_for: CallbacksFor | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    curves: dict[str, dict[float, list]] = {}
    spent: dict[str, float] = {}
    for job in jobs:
        lr = job.cfg.train.lr
        _say(f"[{job.model}] learning-rate comparison: lr {lr:g}")
        spent[job.model] = spent.get(job.model, 0.0) + train_job(job, callbacks_for).get("wall_seconds", 0)
        history = rundir.read_history(job.run_dir)
        curves.setdefault(job.model, {})[lr] = history
    for model, by_lr in curves.items():
        best = best_lr(by_lr)
        results[model] = {"curves": {f"{lr:g}": h for lr, h in by_lr.items()}, "best_lr": best,
                          "seconds": spent[model]}
        _say(f"[{model}] best learning rate: {best:g}")
    return results


def _correct_by_id(run_dir: str) -> dict[str, bool]:
    with open(Path(run_dir) / rundir.PREDICTIONS) as f:
        return {row["id"]: row["correct"] == "1" for row in csv.DictReader(f)}


def _table_row(model: str, full: list[dict[str, Any]], device, measure_seconds: float) -> dict[str, Any]:
    """The comparison table's row of one model: its runs on the whole training set (one per seed), and the
    speed of the first one, measured now."""
    first = full[0]
    acc_mean, acc_std = mean_std([m["test_accuracy"] for m in full])
    row = {
        "model": model, "family": first["family"], "seeds": len(full),
        "accuracy": acc_mean, "accuracy_std": acc_std if len(full) > 1 else None,  # no spread from one seed
        **{k: mean_std([m[k] for m in full])[0] for k in (
            "macro_precision", "macro_recall", "macro_f1", "weighted_precision", "weighted_recall",
            "weighted_f1", "test_loss", "train_seconds", "seconds_per_epoch")},
        "balanced_accuracy": mean_std([m.get("balanced_accuracy", m["macro_recall"]) for m in full])[0],
        "epochs": first["epochs_run"], "params": first["params_total"],
        "params_trainable": _trainable_during_training(first),
        "model_file_mb": round(first["model_file_bytes"] / 2**20, 3),
        "run_dir": first["run_dir"],
    }
    model_obj = load_as_trained(Path(first["run_dir"]), first)
    row["time_spent"] = answer.time_spent(rundir.read_history(Path(first["run_dir"])))
    if model_obj.meta.is_pretrained:
        from ..models.stages import backbone_stages, pretrained_net

        row["input_px"] = int(model_obj.meta.input_size[0])
        row["stages"] = len(backbone_stages(pretrained_net(model_obj).backbone))
    row.update(measure_model(model_obj, device=device, train_batch_size=first["batch_size"],
                             optimizer=first["optimizer"], seconds=measure_seconds))
    row["latency_ms"], row["throughput"] = row["latency_ms_b1"], row["throughput_b64"]
    return row


def summarise(study: StudyConfig, data: str, source, runs: dict, lr_results: dict, out: Path,
              resolutions: dict[str, str] | None = None) -> dict[str, Any]:
    from ..data.inspect import describe

    device = resolve_device(study.common.get("device", "auto"))
    table = [_table_row(model, by_fraction[1.0], device, study.measure_seconds) for model, by_fraction in runs.items()]
    dataset = describe(source)
    imbalance = dataset["imbalance_ratio"] if dataset["imbalance_ratio"] != float("inf") else None
    table.sort(key=lambda r: -r[ranking_key(imbalance)])

    test = None
    best, other = answer.contenders(table)
    if other is not None:
        # a paired test compares two sets of predictions: each model's first run (seed 0, whole training set) of
        # the question's contenders (the best of each approach); the table ranks by the mean over seeds, and the
        # seed table shows how far single runs spread
        a, b = (_correct_by_id(r["run_dir"]) for r in (best, other))
        ids = sorted(a)
        test = {"a": best["model"], "b": other["model"], "runs": "seed 0, whole training set",
                **mcnemar_exact([a[i] for i in ids], [b[i] for i in ids])}
    curves = {m: {f: mean_std([r["test_accuracy"] for r in rs])[0] for f, rs in bf.items()} for m, bf in runs.items()}
    train_sizes = {f: rs[0]["train_samples"] for bf in runs.values() for f, rs in bf.items()}
    seed_spread = {m: [r["test_accuracy"] for r in bf[1.0]] for m, bf in runs.items()}
    firsts = {m: bf[1.0][0] for m, bf in runs.items()}
    anytime_summary = anytime.summarise(
        {m: {"history": anytime.read_history(Path(r["run_dir"])), "test_accuracy": r["test_accuracy"]}
         for m, r in firsts.items()},
        next((r.get("budget_seconds") for r in firsts.values() if r.get("budget_seconds")), None))
    budget_seconds = next((r.get("budget_seconds") for r in firsts.values() if r.get("budget_seconds")), None)
    comparison = {
        "data": data,
        "machine": describe_machine(str(device)),
        "dataset": dataset,
        "data_health": data_health(source, out / rundir.SPLIT),
        "split_sizes": json.loads((out / rundir.SPLIT).read_text())["sizes"],
        "table": table,
        "tradeoffs": tradeoffs(table),
        "mcnemar": test,
        "seed_spread": seed_spread,
        "verdict": verdict(table, test, imbalance, equal_budget=budget_seconds is not None)
        + anytime.verdict_lines(anytime_summary, str(device)),
        "anytime": anytime_summary,
        "ranked_by": ranking_key(imbalance),
        "lr_comparison": lr_results,
        "fraction_curves": {m: {f"{f:g}": v for f, v in c.items()} for m, c in curves.items()},
        "fraction_train_sizes": {f"{f:g}": n for f, n in train_sizes.items()},
        "fraction_winners": fraction_winners(curves),
        "device": str(device),
        "data_options": {k: study.common[k] for k in ("data_dir", "image_size", "grayscale", "class_map", "strict",
                                                      "curation") if k in study.common},
        "curation": source.curation,
        "next_steps": answer.next_steps(best["run_dir"]),
    }
    comparison["resolutions"] = resolutions or {}
    comparison["methods"] = {r["model"]: methods.model_methods(r, lr_results.get(r["model"]), study.to_dict(),
                                                               (resolutions or {}).get(r["model"])) for r in table}
    comparison["answer"] = answer.paragraph(comparison)
    return comparison


def explanations(table: list[dict[str, Any]], source, out: Path) -> dict[str, Any]:
    """The report's heat-map grids and confusions, from each model's first run (seed 0, whole training set)."""
    from ..explain.study_views import study_explanations

    test = load_manifest(out / rundir.SPLIT, source).test
    models = {r["model"]: load_as_trained(Path(r["run_dir"]), rundir.read_metrics(Path(r["run_dir"])))
              for r in table}
    return study_explanations(models, test, {r["model"]: Path(r["run_dir"]) for r in table}, out / "plots")


def data_health(source, split_path: Path) -> dict[str, Any]:
    """The report's "Data health" numbers: unreadable files, exact duplicates, the groups the split kept
    together and the pairs that still cross its parts (the official test set's copies cannot be moved)."""
    from ..data.duplicates import exact_pairs
    from ..data.health import leaked_pairs

    pairs = exact_pairs(source.pool.images)
    labels = source.pool.labels.tolist()
    manifest = json.loads(split_path.read_text())
    return {"unreadable": len(source.skipped), "exact_pairs": len(pairs),
            "across_classes": sum(labels[p.a] != labels[p.b] for p in pairs),
            "grouped": sum(len(g) for g in manifest.get("groups", [])),
            "leaked_pairs": leaked_pairs(load_manifest(split_path, source))}


def _saved_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml: the resolved config it trained with (batch size and LR fitted to the data)."""
    return read_saved(run_dir)


def load_as_trained(run_dir: Path, metrics: dict[str, Any]) -> Classifier:
    """The run's final model with the parameters trainable that were trainable when training ended (model.json
    records them): measured otherwise, a fine-tuned model's frozen stages would be charged gradients, optimizer
    state and the activations autograd keeps for them. The count must equal the run's params_trainable_final.
    In the memory layout the run trained in: channels-last unless its config says not."""
    path = Path(run_dir) / "model"
    model, cfg = load_model(path), _saved_config(run_dir)
    if not cfg.get("train", {}).get("channels_last", True):
        import torch

        model.to(memory_format=torch.contiguous_format)
    if model.meta.is_pretrained and saved_freeze_state(path) is None:
        _replay_freeze_state(model, cfg, metrics)
    want = metrics.get("params_trainable_final")
    got = count_parameters(model)[1]
    if want is not None and got != want:
        raise RuntimeError(f"{run_dir}: {got:,} parameters trainable as saved with the model, "
                           f"but the run ended training with {want:,}")
    return model


def _replay_freeze_state(model: Classifier, saved: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Runs saved before model.json recorded the freeze state: what train_run and fine_tune left, from config.yaml
    (with freeze_epochs the last --unfreeze stages when phase 2 ran, the backbone frozen when it did not)."""
    from ..models.stages import set_trainable
    from ..train.finetune import parse_bn_mode, parse_unfreeze

    bn_frozen = parse_bn_mode(saved.get("finetune_bn", "frozen")) if saved.get("pretrained", True) else False
    stages = None
    if int(saved.get("freeze_epochs") or 0) > 0:
        boundary = metrics.get("phase_boundary")
        phase2_ran = boundary is None or metrics.get("epochs_run", boundary + 1) > boundary
        stages = parse_unfreeze(saved.get("unfreeze", "all")) if phase2_ran else 0
    set_trainable(model, stages, bn_frozen=bn_frozen)


def _trainable_during_training(metrics: dict[str, Any]) -> int:
    return int(metrics.get("params_trainable_final", metrics["params_total"]))


def check_models(study: StudyConfig) -> None:
    from ..models.registry import is_custom

    for model in map(base_model, study.models):
        if not is_custom(model):
            from ..models.pretrained import is_pretrained_name

            if not is_pretrained_name(model):
                raise UserError(f"unknown model {model!r} in the study (see `cnnarena models`)")
