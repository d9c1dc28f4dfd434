"""A finished run, or a whole study, logged to MLflow from what cnnarena wrote: the config as parameters, every row
of history.jsonl as step-wise metrics (the same names and values), metrics.json's numbers as final metrics, and
the run directory as artefacts. A study is one parent run with a child per run.

Logged once a run has finished, from its files, so a resumed or re-run training never logs an epoch twice: each
run directory remembers its MLflow run (mlflow.json, per tracking URI), and logging it again does nothing. A run
that was being logged when the process died is deleted from MLflow and logged again.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..files import atomic_write_text
from ..train.config import flatten_settings

log = logging.getLogger(__name__)

EXPERIMENT = "cnnarena"
MARKER = "mlflow.json"
LOCAL = "local"
SKIPPED = ("checkpoints",)  # a run's resume state: the kept weights are model.safetensors
MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter's value
# the comparison table's columns a study's parent run gets, one metric per model ("accuracy.fast")
STUDY_METRICS = ("accuracy", "accuracy_std", "macro_f1", "train_seconds", "latency_ms_b1", "throughput_b64", "params")


def tracking_uri(value: str) -> str:
    """'local' -> an SQLite store in the current folder (MLflow's own default; it no longer accepts a bare
    ./mlruns file store without an opt-in), anything else as given (http://..., sqlite:///..., databricks)."""
    if value == LOCAL:
        return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    if "://" not in value and not value.startswith("databricks"):
        raise UserError(f"--mlflow {value!r} is not a tracking URI: use 'local', http(s)://HOST:PORT or "
                        "sqlite:///PATH")
    return value


def _client(uri: str):
    logging.getLogger("alembic").setLevel(logging.WARNING)  # table creation in a new SQLite store: not news
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another worker created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _marker(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def _remember(directory: Path, uri: str, run_id: str, done: bool) -> None:
    known = _marker(directory)
    known[uri] = {"run_id": run_id, "done": done}
    atomic_write_text(directory / MARKER, json.dumps(known, indent=1))


def _flat_params(config: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:MAX_PARAM_CHARS] for k, v in flatten_settings(config).items()}


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(float(v))}


def _start(client, directory: Path, uri: str, name: str, tags: dict[str, str],
           key: str | None = None) -> tuple[str | None, str]:
    """(None, id) when directory was logged to uri already (under `key`, the URI by default) and that MLflow run
    still exists; else a fresh MLflow run's (id, id)."""
    key = key or uri
    known = _marker(directory).get(key)
    if known and known.get("done") and _active(client, known["run_id"]):
        return None, known["run_id"]
    if known and known.get("done"):  # deleted in MLflow since (or the store was replaced): logged anew
        known = None
    if known:  # half-logged by a process that died: start it over
        try:
            client.delete_run(known["run_id"])
        except Exception as e:  # gone already, or the store refuses: a new run is logged either way
            log.debug(f"could not delete half-logged MLflow run {known['run_id']}: {e}")
    run = client.create_run(_experiment_id(client, EXPERIMENT), run_name=name, tags=tags)
    run_id = run.info.run_id
    _remember(directory, key, run_id, done=False)
    return run_id, run_id


def _active(client, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:  # no such run in this store
        return False


def log_run(run_dir: Path, uri: str, parent_id: str | None = None) -> str:
    """Log a finished run directory to MLflow (once per URI); returns its MLflow run id."""
    from mlflow.entities import Metric, Param

    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    client = _client(uri)
    tags = {"cnnarena.run_dir": str(run_dir.resolve()), "cnnarena.model": str(metrics.get("model")),
            "cnnarena.data": str(metrics.get("data"))}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    new, run_id = _start(client, run_dir, uri, run_dir.name, tags)
    if new is None:
        if parent_id:  # logged under a parent that was since replaced (a half-logged study or search): re-attached
            client.set_tag(run_id, "mlflow.parentRunId", parent_id)
        return run_id
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    now = int(time.time() * 1000)
    series = [Metric(key, value, now, int(row["epoch"])) for row in rows
              for key, value in _numbers({k: v for k, v in row.items() if k != "epoch"}).items()]
    final = [Metric(key, value, now, len(rows)) for key, value in _numbers(metrics).items()]
    params = [Param(k, v) for k, v in _flat_params(config).items()]
    _log_batches(client, run_id, series + final, params)
    for item in sorted(run_dir.iterdir()):
        if item.name in SKIPPED or item.name == MARKER:
            continue
        if item.is_dir():
            client.log_artifacts(run_id, str(item), artifact_path=item.name)
        else:
            client.log_artifact(run_id, str(item))
    client.set_terminated(run_id)
    _remember(run_dir, uri, run_id, done=True)
    return run_id


def _log_batches(client, run_id: str, metrics: list, params: list) -> None:
    """MLflow takes at most 1,000 metrics and 100 parameters per call."""
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


def study_run_dirs(study_dir: Path) -> list[Path]:
    """Every finished run of a study (its comparison and its final runs), in a stable order."""
    return sorted(p.parent for p in Path(study_dir).rglob("metrics.json") if (p.parent / "config.yaml").exists())


def log_study(study_dir: Path, uri: str, study_config: dict[str, Any], comparison: dict[str, Any]) -> str:
    """The study as a parent MLflow run (its settings, each model's row of the comparison, the report as artefacts) with
    every finished run as a child; returns the parent's id. Safe to call again after a resumed study."""
    from mlflow.entities import Metric, Param

    study_dir = Path(study_dir)
    client = _client(uri)
    new, parent = _start(client, study_dir, uri, f"study {study_dir.name}",
                         {"cnnarena.study_dir": str(study_dir.resolve())})
    for run_dir in study_run_dirs(study_dir):
        log_run(run_dir, uri, parent_id=parent)
    if new is None:
        return parent
    now = int(time.time() * 1000)
    table = [Metric(f"{key}.{row['model']}", value, now, 0) for row in comparison.get("table", [])
             for key, value in _numbers({k: row.get(k) for k in STUDY_METRICS}).items()]
    _log_batches(client, parent, table, [Param(k, v) for k, v in _flat_params(study_config).items()])
    for name in ("comparison.md", "comparison.json", "comparison.csv", "report.html"):
        if (study_dir / name).exists():
            client.log_artifact(parent, str(study_dir / name))
    if (study_dir / "plots").is_dir():
        client.log_artifacts(parent, str(study_dir / "plots"), artifact_path="plots")
    client.set_terminated(parent)
    _remember(study_dir, uri, parent, done=True)
    return parent


def log_tune(tune_dir: Path, uri: str, settings: dict[str, Any], summary: dict[str, Any]) -> str:
    """An Optuna search as a parent MLflow run (its settings, the best trial's figures and the trial counts, tune.json
    and the report as artefacts) with every completed trial's run as a child (pruned trials wrote no metrics.json and
    are left out); returns the parent's id. One parent per tune directory and search: workers sharing the directory
    take turns and add to the same parent; called again after more trials finished, it adds their runs and logs the
    parent's figures again (step: trials finished); with no new trial it changes nothing."""
    from mlflow.entities import Metric, Param

    from ..writer_lock import taking_turns

    tune_dir = Path(tune_dir)
    with taking_turns(tune_dir / ".mlflow.lock"):
        client = _client(uri)
        study = str(summary["study"])
        key = f"{uri} {study}"  # a directory reused for another search gets a parent of its own
        new, parent = _start(client, tune_dir, uri, f"tune {study}",
                             {"cnnarena.tune_dir": str(tune_dir.resolve()), "cnnarena.study": study}, key=key)
        for run_dir in study_run_dirs(tune_dir / "trials"):
            log_run(run_dir, uri, parent_id=parent)
        counts = summary["trials"]
        step = int(counts.get("complete", 0)) + int(counts.get("pruned", 0))
        logged = [m.step for m in client.get_metric_history(parent, "trials.finished")]
        if step in logged:
            return parent
        figures = {"best_value": summary.get("best_value"), "best_test_accuracy": summary.get("best_test_accuracy"),
                   "best_trial": summary.get("best_trial"), "trials.finished": step,
                   **{f"trials.{state}": count for state, count in counts.items()}}
        params = [Param(k, v) for k, v in _flat_params(settings).items()] if new else []  # MLflow's are immutable
        now = int(time.time() * 1000)
        _log_batches(client, parent, [Metric(k, v, now, step) for k, v in _numbers(figures).items()], params)
        client.set_tag(parent, "cnnarena.best_params", json.dumps(summary.get("best_params", {}))[:MAX_PARAM_CHARS])
        for name in ("tune.json", "tune_report.html"):
            if (tune_dir / name).exists():
                client.log_artifact(parent, str(tune_dir / name))
        client.set_terminated(parent)
        _remember(tune_dir, key, parent, done=True)
    return parent


SECRET_QUERY_KEYS = ("pass", "pwd", "secret", "token", "key")


def without_password(url: str | None) -> str | None:
    """A database URL fit for a log: the password masked, in the user part or the query (an Optuna storage may carry
    one in either)."""
    if not url:
        return url
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        query = {k: ("masked" if any(word in k.lower() for word in SECRET_QUERY_KEYS) else v)
                 for k, v in parsed.query.items()}
        return parsed.set(query=query).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: only the host and path, after any credentials and query
        return url.split("@")[-1].split("?")[0]
