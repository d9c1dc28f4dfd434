"""`cnnarena tune`: a hyper-parameter search with Optuna, every trial a normal cnnarena run.

Optuna does the searching (TPE sampler), the pruning (median or successive halving on each epoch's validation
accuracy) and the bookkeeping in its storage: SQLite in the output directory by default, any SQLAlchemy URL
(PostgreSQL is the tested one) for many workers. Workers started with the same command and --storage share the
study: --trials counts finished trials over all of them. A worker killed mid-trial stops sending heartbeats; another
worker marks its trial failed and retries it once, in the killed trial's run directory, which resumes from its
last epoch. The objective is the best validation accuracy (the test split is left for the final verdict).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import build_config
from ..documents import read_document
from ..errors import UserError
from ..files import atomic_write_text
from ..models.registry import is_custom
from ..run import train_run
from ..train.callbacks import Callback

log = logging.getLogger(__name__)

CUSTOM_SPACE: dict[str, Any] = {
    "lr": {"low": 1e-4, "high": 3e-2, "log": True},
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "batch_size": {"choices": [32, 64, 128, 256]},
    "label_smoothing": {"low": 0.0, "high": 0.2},
    "augment": {"choices": ["none", "flip", "light", "standard"]},
    "epochs": {"low": 3, "high": 12},
}
BACKBONE_SPACE: dict[str, Any] = {
    **{k: v for k, v in CUSTOM_SPACE.items() if k != "epochs"},
    "epochs": {"low": 1, "high": 4},
    "unfreeze": {"choices": ["1", "2", "3", "all"]},
    "finetune_lr_scale": {"low": 0.03, "high": 1.0, "log": True},
}
PRUNERS = ("median", "halving", "none")
HEARTBEAT_SECONDS = 10  # a worker's "still alive"; silent for 3 of them, its trial is failed and retried


def load_space(path: Path | None, model: str) -> dict[str, Any]:
    """The search space: a YAML/JSON file of option: {low, high[, log]} | {choices: [...]} | a fixed value."""
    space = dict(CUSTOM_SPACE if is_custom(model) else BACKBONE_SPACE)
    if path is None:
        return space
    doc = read_document(Path(path), "--space")
    if not isinstance(doc, dict) or not doc:
        raise UserError(f"--space {path}: expected a mapping of option: range, e.g. lr: {{low: 1e-4, high: 1e-1, "
                        "log: true}")
    for key, value in doc.items():
        _check_range(str(key), value, path)
    return {str(k): v for k, v in doc.items()}


def _check_range(key: str, value: Any, path: Path) -> None:
    """One entry of --space: a run option, and a range Optuna can sample (checked here, not by Optuna's traceback)."""
    import difflib
    import math

    from ..config import run_option_names

    if key not in run_option_names():
        close = difflib.get_close_matches(key, run_option_names(), n=1, cutoff=0.6)
        raise UserError(f"--space {path}: {key!r} is not an option of a run" +
                        (f" (did you mean {close[0]!r}?)" if close else ""))
    if not isinstance(value, dict):
        return
    where = f"--space {path}: {key}"
    if "choices" in value:
        if not isinstance(value["choices"], list) or not value["choices"]:
            raise UserError(f"{where}: choices must be a non-empty list, got {value['choices']!r}")
        return
    if not {"low", "high"} <= value.keys():
        raise UserError(f"{where} needs low and high, or choices, got {value}")
    low, high = value["low"], value["high"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        raise UserError(f"{where}: low and high must be finite numbers, got {low!r} and {high!r}")
    if low > high:
        raise UserError(f"{where}: low {low} is above high {high}")
    if value.get("log") and low <= 0:
        raise UserError(f"{where}: a log range needs low above 0, got {low}")


def suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for key, spec in space.items():
        if not isinstance(spec, dict):
            values[key] = spec
        elif "choices" in spec:
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
        elif all(isinstance(spec[b], int) and not isinstance(spec[b], bool) for b in ("low", "high")) \
                and not spec.get("log"):
            values[key] = trial.suggest_int(key, spec["low"], spec["high"], step=int(spec.get("step", 1)))
        else:
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return values


class ReportToOptuna(Callback):
    """Each epoch's validation accuracy to the trial; a pruned trial stops after that epoch."""

    def __init__(self, trial) -> None:
        self.trial = trial

    def on_epoch_end(self, s) -> None:
        import optuna

        row = s.history[-1]
        self.trial.report(row["val_accuracy"], row["epoch"])
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {row['epoch']}: validation accuracy {row['val_accuracy']:.4f}")


@dataclass
class TuneConfig:
    data: str
    model: str
    trials: int = 20
    out: Path = Path("tune")
    storage: str | None = None
    study_name: str | None = None
    space: Path | None = None
    pruner: str = "median"
    seed: int = 0
    heartbeat: float = HEARTBEAT_SECONDS
    common: dict[str, Any] | None = None  # fixed run options (device, data options...)

    def name(self) -> str:
        return self.study_name or f"{Path(self.data).name}-{Path(self.model).stem}"

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(Path(self.out) / 'optuna.db').resolve()}"


def with_installed_driver(url: str) -> str:
    """postgresql://... with the PostgreSQL driver that is installed: SQLAlchemy 2.1 takes psycopg 3 for a URL that
    names none, and cnnarena installs psycopg2."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def _storage(url: str, heartbeat: float):
    import inspect

    import optuna

    url = with_installed_driver(url)
    beat = max(1, round(heartbeat))
    options = {"heartbeat_interval": beat, "grace_period": 3 * beat}
    with warnings.catch_warnings():  # heartbeats and retries are "experimental" in Optuna's words since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = _retry_callback()(max_retry=1)
    if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters:
        options["heartbeat_stale_trial_callback"] = retry  # Optuna 4.9+; failed_trial_callback before
    else:
        options["failed_trial_callback"] = retry
    if url.startswith("sqlite"):  # workers on one machine share the file: wait for its lock rather than fail
        options["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **options)
        except Exception as e:  # noqa: BLE001 - a bad URL, a server that is down, a missing driver: one line
            # workers starting together on a new database race to create Optuna's tables: the loser tries again
            if attempt == 2 or "already exists" not in str(e) and "duplicate key" not in str(e):
                from ..masking import mask_secrets

                raise UserError(mask_secrets(f"--storage {url}: {str(e).splitlines()[0][:200]}")) from None
            time.sleep(1 + attempt)


def _retry_callback():
    import optuna

    return getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback


def _pruner(name: str):
    import optuna

    if name not in PRUNERS:
        raise UserError(f"unknown --pruner {name!r}: use {', '.join(PRUNERS)}")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def run_tune(tc: TuneConfig, callbacks_for: Callable[[Path], Sequence[Callback]] | None = None) -> dict[str, Any]:
    """Run trials until the study holds tc.trials finished (complete or pruned) ones; write the summary.
    callbacks_for: more training callbacks for each trial's run (a tracker logging it live)."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    space = load_space(tc.space, tc.model)
    out = Path(tc.out)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=tc.name(), storage=_storage(tc.storage_url(), tc.heartbeat),
                                direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=tc.seed), pruner=_pruner(tc.pruner),
                                load_if_exists=True)

    def objective(trial) -> float:
        # a live Trial has no system attributes in Optuna 5: its stored (frozen) copy does
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retried = _retry_callback().retried_trial_number(frozen)
        number = retried if retried is not None else trial.number  # a retry resumes the killed trial's run
        run_dir = out / "trials" / f"{number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        values = suggest(trial, space)
        cfg = build_config(None, {**(tc.common or {}), "data": tc.data, "model": tc.model, **values})
        log.info(f"trial {trial.number}{f' (retry of {retried})' if retried is not None else ''}: "
                 + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()))
        extra = list(callbacks_for(run_dir)) if callbacks_for else []
        try:
            metrics = train_run(cfg, run_dir, callbacks=[ReportToOptuna(trial), *extra])
        finally:
            for callback in extra:
                callback.close()
        trial.set_user_attr("test_accuracy", metrics["test_accuracy"])
        return float(metrics["best_val_accuracy"])

    t0 = time.perf_counter()
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    if len(study.get_trials(deepcopy=False, states=finished)) < tc.trials:
        study.optimize(objective, callbacks=[MaxTrialsCallback(tc.trials, states=finished)])
    return write_summary(study, out, time.perf_counter() - t0)


def write_summary(study, out: Path, seconds: float) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise UserError(f"tune {study.study_name}: no trial finished (see {out / 'trials'})")
    best = study.best_trial
    summary = {
        "study": study.study_name, "best_trial": best.number, "best_value": best.value, "best_params": best.params,
        "best_run_dir": best.user_attrs.get("run_dir"), "best_test_accuracy": best.user_attrs.get("test_accuracy"),
        "trials": {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState},
        "seconds_this_worker": round(seconds, 1),
        "rows": [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                  "run_dir": t.user_attrs.get("run_dir"), "epochs_reported": len(t.intermediate_values)}
                 for t in trials],
    }
    from ..report.tune_report import write_tune_report

    summary["report"] = str(write_tune_report(study, summary, out))
    atomic_write_text(out / "tune.json", json.dumps(summary, indent=1, default=str))
    return summary
