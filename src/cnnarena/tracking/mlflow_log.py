"""Runs, studies and searches logged to MLflow from what cnnarena wrote: the config as parameters, every row of
history.jsonl as step-wise metrics (the same names and values, step = epoch), metrics.json's numbers as final
metrics, and the run directory as artefacts. A study is one parent run with a child per run.

A training logs each epoch as it ends (mlflow_live.LiveRun); the finished run is then completed from its files (the
epochs not logged yet, the final metrics, the artefacts). Each run directory remembers its MLflow run (mlflow.json,
per tracking URI), so every epoch is logged once: a resumed run carries on in the MLflow run it started (should that
run hold a point the history does not, it is deleted and logged anew: a guard, since an epoch is saved before it
is logged); a finished run logged again changes nothing.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

from .. import rundir
from ..config import read_saved
from ..errors import UserError
from ..files import atomic_write_text
from ..masking import mask_secrets
from ..rundir import flatten_settings

log = logging.getLogger(__name__)

EXPERIMENT = "cnnarena"
MARKER = "mlflow.json"
STUDY_LOCK = ".mlflow.lock"  # in a study or tune directory: its workers open the parent run in turn
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


def tracking_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def open_store(uri: str) -> None:
    """Reach the store and create cnnarena's experiment in it (a new SQLite store creates its tables then, which a
    process killed halfway would leave broken: so before training, not on the logging thread); a UserError when the
    store cannot be used."""
    _check_server_answers(uri)
    try:
        with _creating_alone(uri):
            _experiment_id(tracking_client(uri), EXPERIMENT)
    except Exception as e:  # unreachable, refused, not a store
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(mask_secrets(f"--mlflow: the tracking store at {uri} cannot be used: {type(e).__name__}: "
                                     f"{first}")) from e


SERVER_CONNECT_SECONDS = 10


def _check_server_answers(uri: str) -> None:
    """A UserError when nothing accepts a connection at an http(s) tracking URI's host and port: MLflow's client
    retries a refused or timed-out connection for minutes before it gives up. Reached through a proxy (the
    environment's), the proxy is what answers, so MLflow's own client is left to find out."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    proxies = getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not proxy_bypass(parts.hostname):  # as requests does
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=SERVER_CONNECT_SECONDS).close()
    except (OSError, ValueError) as e:  # refused, no such host, timed out (the name lookup has no timeout of its
        # own); a port out of range
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise UserError(mask_secrets(f"--mlflow: no tracking server answers at {uri}: {reason}")) from None
    if parts.scheme == "http" and not _answers_http(parts.hostname, port):
        raise UserError(mask_secrets(f"--mlflow: the server at {uri} accepted the connection but sent nothing in "
                                     f"{SERVER_ANSWER_SECONDS} s: is it a tracking server?")) from None


SERVER_ANSWER_SECONDS = 5


def _answers_http(host: str, port: int) -> bool:
    """Whether anything comes back to a plain GET /health within SERVER_ANSWER_SECONDS (a server that accepts and
    never answers held `train` silent for minutes: MLflow's client retries with long timeouts)."""
    try:
        with socket.create_connection((host, port), timeout=SERVER_ANSWER_SECONDS) as sock:
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return bool(sock.recv(1))
    except OSError:  # timed out, reset
        return False


def _creating_alone(uri: str):
    """For an SQLite store: an flock beside its file (FILE.lock), so workers starting at once on a new store do not
    create its tables side by side (the second fails on a table the first made). A server orders that itself."""
    import contextlib

    from ..writer_lock import taking_turns

    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix):] in ("", ":memory:"):
        return contextlib.nullcontext()
    db = Path(uri[len(prefix):])
    return taking_turns(db.with_name(db.name + ".lock"))


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
    """A parent run (a study's or a search's): (None, id) when directory was logged to uri already (under `key`,
    the URI by default) and that MLflow run still exists; (id, id) of the unfinished one, opened before its children
    trained (what it logged is kept: the caller adds only what is missing); else of a fresh MLflow run."""
    key = key or uri
    known = _marker(directory).get(key)
    if known and _active(client, known["run_id"]):
        return (None if known.get("done") else known["run_id"]), known["run_id"]
    run_id = client.create_run(_experiment_id(client, EXPERIMENT), run_name=name, tags=tags).info.run_id
    _remember(directory, key, run_id, done=False)
    return run_id, run_id


def _active(client, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:  # no such run in this store
        return False


def run_tags(run_dir: Path, config: dict[str, Any], parent_id: str | None) -> dict[str, str]:
    tags = {"cnnarena.run_dir": str(Path(run_dir).resolve()), "cnnarena.model": str(config.get("model")),
            "cnnarena.data": str(config.get("data"))}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    return tags


def epoch_points(rows: list[dict[str, Any]], final: dict[str, Any] | None = None) -> dict[tuple[str, int], float]:
    """(metric, step) -> value: each history row's numbers at its epoch, and the final metrics at the last epoch."""
    points = {(key, int(row["epoch"])): value for row in rows
              for key, value in _numbers({k: v for k, v in row.items() if k != "epoch"}).items()}
    if final is not None:
        points.update({(key, len(rows)): value for key, value in _numbers(final).items()})
    return points


def log_points(client, run_id: str, points: dict[tuple[str, int], float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    _log_batches(client, run_id, [Metric(key, value, now, step) for (key, step), value in points.items()], [])


def open_run(client, run_dir: Path, uri: str, rows: list[dict[str, Any]], parent_id: str | None = None,
             final: dict[str, Any] | None = None) -> tuple[str, bool]:
    """(id, finished) of run_dir's MLflow run at uri, its points brought up to `rows` (and `final`): the finished run
    as it is; the unfinished one when every point it logged is among them (the missing ones are logged now); else
    a new run, parameters from config.yaml, with all of them (an unfinished run it replaces is deleted)."""
    run_dir = Path(run_dir)
    expected = epoch_points(rows, final)
    known = _marker(run_dir).get(uri)
    if known and _active(client, known["run_id"]):
        run_id = known["run_id"]
        data = client.get_run(run_id).data
        if parent_id and data.tags.get("mlflow.parentRunId") != parent_id:
            client.set_tag(run_id, "mlflow.parentRunId", parent_id)  # its parent was replaced since
        if known.get("done"):
            return run_id, True
        keys = {k for k, _ in expected} | set(data.metrics)
        logged = {(m.key, m.step): m.value for key in keys for m in client.get_metric_history(run_id, key)}
        if all(expected.get(point) == value for point, value in logged.items()):
            log_points(client, run_id, {p: v for p, v in expected.items() if p not in logged})
            return run_id, False
        log.info(f"MLflow run {run_id} logged an epoch this run trained again: logged anew")
    experiment = _experiment_id(client, EXPERIMENT)
    for stale in ({known["run_id"]} if known else set()) | _unfinished_runs_of(client, experiment, run_dir):
        try:
            client.delete_run(stale)
        except Exception as e:  # gone already, or the store refuses: a new run is logged either way
            log.debug(f"could not delete MLflow run {stale}: {e}")
    config = read_saved(run_dir)
    run_id = client.create_run(experiment, run_name=run_dir.name,
                               tags=run_tags(run_dir, config, parent_id)).info.run_id
    from mlflow.entities import Param

    # parameters before the run is remembered: a remembered run always has them (one a process died before
    # remembering is found by its tag and deleted, above)
    _log_batches(client, run_id, [], [Param(k, v) for k, v in _flat_params(config).items()])
    _remember(run_dir, uri, run_id, done=False)
    log_points(client, run_id, expected)
    return run_id, False


def _unfinished_runs_of(client, experiment: str, run_dir: Path) -> set[str]:
    """Runs of run_dir still running in MLflow: one a killed process created but had not yet remembered."""
    path = str(Path(run_dir).resolve())
    if "'" in path:  # MLflow's filter strings cannot quote it
        return set()
    found = client.search_runs([experiment], filter_string=f"tags.`cnnarena.run_dir` = '{path}' and "
                               "attributes.status = 'RUNNING'")
    return {r.info.run_id for r in found}


def history_rows(run_dir: Path) -> list[dict[str, Any]]:
    return rundir.read_history(run_dir)


def log_run(run_dir: Path, uri: str, parent_id: str | None = None) -> str:
    """Complete a finished run directory's MLflow run (once per URI): the epochs not logged live, the final metrics,
    the artefacts; returns its MLflow run id."""
    run_dir = Path(run_dir)
    metrics = rundir.read_metrics(run_dir)
    client = tracking_client(uri)
    run_id, finished = open_run(client, run_dir, uri, history_rows(run_dir), parent_id, final=metrics)
    if finished:
        return run_id
    for item in sorted(run_dir.iterdir()):
        if item.name in SKIPPED or item.name == MARKER or item.name.startswith("."):  # its lock, files being written
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
    return sorted(p.parent for p in Path(study_dir).rglob(rundir.METRICS) if (p.parent / rundir.CONFIG).exists())


def _start_study(client, study_dir: Path, uri: str) -> tuple[str | None, str]:
    return _start(client, study_dir, uri, f"study {study_dir.name}", {"cnnarena.study_dir": str(study_dir.resolve())})


def start_study(study_dir: Path, uri: str) -> str:
    """The study's parent run, opened before its runs train so that they log under it as they train (log_study
    completes it); returns its id. Workers sharing the study take turns, so they open one parent."""
    from ..writer_lock import taking_turns

    study_dir = Path(study_dir)
    with taking_turns(study_dir / STUDY_LOCK):
        return _start_study(tracking_client(uri), study_dir, uri)[1]


def log_study(study_dir: Path, uri: str, study_config: dict[str, Any], comparison: dict[str, Any]) -> str:
    """The study as a parent MLflow run (its settings, each model's row of the comparison, the report as artefacts) with
    every finished run as a child; returns the parent's id. Safe to call again after a resumed study."""
    from mlflow.entities import Metric, Param

    from ..writer_lock import taking_turns

    study_dir = Path(study_dir)
    client = tracking_client(uri)
    with taking_turns(study_dir / STUDY_LOCK):
        new, parent = _start_study(client, study_dir, uri)
    for run_dir in study_run_dirs(study_dir):
        log_run(run_dir, uri, parent_id=parent)
    if new is None:
        return parent
    now = int(time.time() * 1000)
    logged = client.get_run(parent).data  # a parent completed halfway before keeps what it logged
    table = [Metric(f"{key}.{row['model']}", value, now, 0) for row in comparison.get("table", [])
             for key, value in _numbers({k: row.get(k) for k in STUDY_METRICS}).items()
             if f"{key}.{row['model']}" not in logged.metrics]
    params = [] if logged.params else [Param(k, v) for k, v in _flat_params(study_config).items()]
    _log_batches(client, parent, table, params)
    for name in (rundir.COMPARISON_MD, rundir.COMPARISON, rundir.COMPARISON_CSV, rundir.REPORT):
        if (study_dir / name).exists():
            client.log_artifact(parent, str(study_dir / name))
    if (study_dir / "plots").is_dir():
        client.log_artifacts(parent, str(study_dir / "plots"), artifact_path="plots")
    client.set_terminated(parent)
    _remember(study_dir, uri, parent, done=True)
    return parent


def _tune_key(uri: str, study: str) -> str:
    return f"{uri} {study}"  # a directory reused for another search gets a parent of its own


def _start_tune(client, tune_dir: Path, uri: str, study: str) -> tuple[str | None, str]:
    return _start(client, tune_dir, uri, f"tune {study}",
                  {"cnnarena.tune_dir": str(Path(tune_dir).resolve()), "cnnarena.study": study},
                  key=_tune_key(uri, study))


def start_tune(tune_dir: Path, uri: str, study: str) -> str:
    """The search's parent run (one per tune directory and Optuna study, shared by the workers), opened before
    the trials train so that they log under it as they train (log_tune completes it); returns its id."""
    from ..writer_lock import taking_turns

    Path(tune_dir).mkdir(parents=True, exist_ok=True)
    with taking_turns(Path(tune_dir) / STUDY_LOCK):
        return _start_tune(tracking_client(uri), Path(tune_dir), uri, study)[1]


def log_stopped(run_dir: Path, uri: str, parent_id: str | None, state: str, status: str) -> str:
    """A run stopped before it finished (a pruned or failed trial): its epochs, tagged with `state`, ended with
    MLflow's `status` (once)."""
    client = tracking_client(uri)
    run_id, finished = open_run(client, run_dir, uri, history_rows(run_dir), parent_id)
    if not finished:
        client.set_tag(run_id, "cnnarena.state", state)
        client.set_terminated(run_id, status=status)
        _remember(Path(run_dir), uri, run_id, done=True)
    return run_id


def log_tune(tune_dir: Path, uri: str, settings: dict[str, Any], summary: dict[str, Any]) -> str:
    """An Optuna search as a parent MLflow run (its settings, the best trial's figures and the trial counts, tune.json
    and the report as artefacts) with every completed trial's run as a child, and every pruned one (its epochs,
    tagged cnnarena.state=pruned, ended as KILLED) and failed one that no retry took over (FAILED); returns the
    parent's id. One parent per tune directory and search: workers sharing the directory take turns and add to the
    same parent; called again after more trials finished, it adds their runs and logs the parent's figures again
    (step: trials finished); with no new trial it changes nothing."""
    from mlflow.entities import Metric, Param

    from ..writer_lock import taking_turns

    tune_dir = Path(tune_dir)
    with taking_turns(tune_dir / STUDY_LOCK):
        client = tracking_client(uri)
        study = str(summary["study"])
        new, parent = _start_tune(client, tune_dir, uri, study)
        for run_dir in study_run_dirs(tune_dir / "trials"):
            log_run(run_dir, uri, parent_id=parent)
        rows = [r for r in summary.get("rows", [])
                if r.get("run_dir") and (Path(r["run_dir"]) / rundir.CONFIG).exists()]
        retried = {r["run_dir"] for r in rows if r["state"] != "fail"}  # a retry trains on in the same directory
        for row in rows:
            if row["state"] == "pruned":
                log_stopped(Path(row["run_dir"]), uri, parent, "pruned", "KILLED")
            elif row["state"] == "fail" and row["run_dir"] not in retried:
                log_stopped(Path(row["run_dir"]), uri, parent, "failed", "FAILED")
        counts = summary["trials"]
        step = int(counts.get("complete", 0)) + int(counts.get("pruned", 0))
        logged = [m.step for m in client.get_metric_history(parent, "trials.finished")]
        if step in logged:
            return parent
        figures = {"best_value": summary.get("best_value"), "best_test_accuracy": summary.get("best_test_accuracy"),
                   "best_trial": summary.get("best_trial"), "trials.finished": step,
                   **{f"trials.{state}": count for state, count in counts.items()}}
        params = ([Param(k, v) for k, v in _flat_params(settings).items()]  # MLflow's are immutable: logged once
                  if new and not client.get_run(parent).data.params else [])
        now = int(time.time() * 1000)
        _log_batches(client, parent, [Metric(k, v, now, step) for k, v in _numbers(figures).items()], params)
        client.set_tag(parent, "cnnarena.best_params", json.dumps(summary.get("best_params", {}))[:MAX_PARAM_CHARS])
        for name in ("tune.json", "tune_report.html"):
            if (tune_dir / name).exists():
                client.log_artifact(parent, str(tune_dir / name))
        client.set_terminated(parent)
        _remember(tune_dir, _tune_key(uri, study), parent, done=True)
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
