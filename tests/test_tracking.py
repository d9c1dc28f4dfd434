"""TensorBoard event files and MLflow runs, read back with their own readers, hold what history.csv and
metrics.json hold; a killed and resumed run shows every epoch once; a study is one MLflow parent run with a child
per run."""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_run import KILL_AFTER_STATE, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from cnnarena.train.callbacks import Callback
from cnnarena.train.tensorboard_log import FINAL_METRICS, scalar_tag, wait_to_sort_last, writer_for


def events(run):
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def history(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def mlflow_client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.mark.slow  # a CLI subprocess killed mid-run
def test_a_killed_and_resumed_run_logs_every_epoch_once_to_tensorboard_and_mlflow(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    args = ["train", "digits", "--model", "simple-2conv", "--epochs", "3", "--fraction", "0.3", "--out", str(run)]
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_STATE, "2", *args, "--mlflow", "local"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)  # where `local` puts the store
    assert killed.returncode == -9
    assert sorted(e.step for e in events(run).Scalars("loss/train")) == [1]  # epoch 2 died before its events
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    # what the live thread logged before the kill: epoch 1 or nothing, as the race went; the resumed run must
    # carry on in that MLflow run either way
    before = client.search_runs([client.get_experiment_by_name("cnnarena").experiment_id]) if (
        client.get_experiment_by_name("cnnarena")) else []
    assert len(before) <= 1 and all(r.info.status == "RUNNING" for r in before)

    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli([*args, "--mlflow", "local"], monkeypatch, capsys)
    assert code == 0, err
    rows, metrics = history(run), json.loads((run / "metrics.json").read_text())
    acc = events(run)
    for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_second"):
        logged = acc.Scalars(scalar_tag(column))
        assert [e.step for e in logged] == [1, 2, 3], column  # once each: the killed file's epochs were purged
        assert [e.value for e in logged] == pytest.approx([float(r[column]) for r in rows], rel=1e-6), column
    for key, tag in FINAL_METRICS.items():
        assert acc.Scalars(tag)[-1].value == pytest.approx(float(metrics[key]), rel=1e-6), tag
    assert {"plots/training_curves", "plots/confusion_matrix"} <= set(acc.Tags()["images"])
    start = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams  # the HParams tab's row of this run
    assert hparams["model"].string_value == "simple-2conv" and hparams["train.epochs"].number_value == 3

    assert f"at {uri}" in err
    [logged_run] = client.search_runs([client.get_experiment_by_name("cnnarena").experiment_id])
    run_id = logged_run.info.run_id
    assert logged_run.info.status == "FINISHED"
    # the killed process's MLflow run was carried on, or (killed before it remembered the run) deleted
    assert all(r.info.run_id == run_id or client.get_run(r.info.run_id).info.lifecycle_stage == "deleted"
               for r in before)
    for column in ("train_loss", "val_accuracy", "lr"):
        points = sorted(client.get_metric_history(run_id, column), key=lambda m: m.step)
        assert [(m.step, m.value) for m in points] == [(i + 1, pytest.approx(float(r[column]), rel=1e-9))
                                                       for i, r in enumerate(rows)], column
    assert logged_run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert logged_run.data.params["train.epochs"] == "3" and logged_run.data.params["model"] == "simple-2conv"
    artefacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "history.csv", "model.safetensors", "plots"} <= artefacts
    assert "checkpoints" not in artefacts

    code, _, err = run_cli([*args, "--mlflow", "local"], monkeypatch, capsys)  # the finished run, again
    assert code == 0 and run_id in err
    assert len(client.search_runs([logged_run.info.experiment_id])) == 1  # logged once


def test_a_new_event_file_is_read_after_one_a_killed_process_wrote_in_the_same_second(tmp_path):
    # A killed process's file, stamped a second ahead of ours and with a pid that sorts after any real one: read
    # after ours, its purge at step 1 would erase our epochs (the CI failure of a quick resume).
    killed = writer_for(tmp_path, purge_step=1)
    killed.add_scalar("loss/train", 9.0, global_step=1)
    killed.close()
    [path] = tmp_path.glob("events.out.tfevents.*")
    path.rename(tmp_path / f"events.out.tfevents.{int(time.time()) + 1:010d}.host.99999999.0")

    resumed = writer_for(tmp_path, purge_step=1)
    for step in (1, 2, 3):
        resumed.add_scalar("loss/train", float(step), global_step=step)
    resumed.close()
    assert [(e.step, e.value) for e in events(tmp_path).Scalars("loss/train")] == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_only_a_file_from_this_second_or_the_next_is_waited_for(tmp_path):
    slept = []
    assert wait_to_sort_last(tmp_path, clock=lambda: 1000.5, sleep=slept.append) == 0  # no event file yet
    (tmp_path / "events.out.tfevents.0000001000.host.12.0").touch()
    assert wait_to_sort_last(tmp_path, clock=lambda: 1000.5, sleep=slept.append) == pytest.approx(0.5)
    assert wait_to_sort_last(tmp_path, clock=lambda: 1001.0, sleep=slept.append) == 0  # a later second sorts last
    assert wait_to_sort_last(tmp_path, clock=lambda: 999.5, sleep=slept.append) == pytest.approx(1.5)  # a second ahead
    assert wait_to_sort_last(tmp_path, clock=lambda: 990.0, sleep=slept.append) == 0  # clock set back: not waited
    assert slept == [pytest.approx(0.5), pytest.approx(1.5)]


class SeesMlflowDuringTraining(Callback):
    """After LiveRun: at each epoch's end, waits (a while) for MLflow to hold that epoch, while the run still trains."""

    def __init__(self, client, run_dir):
        self.client, self.run_dir, self.seen = client, run_dir, []

    def on_epoch_final(self, s):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            marker = self.run_dir / "mlflow.json"
            if marker.exists():
                [known] = json.loads(marker.read_text()).values()
                steps = [m.step for m in self.client.get_metric_history(known["run_id"], "val_accuracy")]
                if s.epoch in steps:
                    self.seen.append((steps, self.client.get_run(known["run_id"]).info.status))
                    return
            time.sleep(0.05)
        raise AssertionError(f"epoch {s.epoch} never reached MLflow")


def test_each_epoch_reaches_mlflow_while_the_run_trains_and_the_run_is_completed_at_the_end(tmp_path):
    from cnnarena.config import build_config
    from cnnarena.run import train_run
    from cnnarena.tracking.mlflow_live import LiveRun
    from cnnarena.tracking.mlflow_log import log_run

    run = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    cfg = build_config({}, {"data": "digits", "model": "simple-2conv", "epochs": 3, "fraction": 0.3,
                            "tensorboard": False, "out": str(run)})
    live, sees = LiveRun(run, uri), SeesMlflowDuringTraining(client, run)
    train_run(cfg, run, callbacks=[live, sees])
    live.close()
    assert sees.seen == [([1], "RUNNING"), ([1, 2], "RUNNING"), ([1, 2, 3], "RUNNING")]
    run_id = log_run(run, uri)
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED" and finished.data.params["train.epochs"] == "3"
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1, 2, 3]  # not logged again
    assert finished.data.metrics["test_accuracy"] == json.loads((run / "metrics.json").read_text())["test_accuracy"]


def test_an_unfinished_mlflow_run_carries_on_only_where_what_it_logged_is_the_history(tmp_path):
    from cnnarena.tracking.mlflow_log import open_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: m\ndata: d\ntrain:\n  epochs: 3\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    first = {"epoch": 1, "phase": "", "train_loss": 1.0}
    experiment = client.create_experiment("cnnarena")
    orphan = client.create_run(experiment, tags={"cnnarena.run_dir": str(run.resolve())}).info.run_id  # killed
    started, finished = open_run(client, run, uri, [first])  # before it remembered its run
    assert not finished and client.get_run(orphan).info.lifecycle_stage == "deleted"
    carried, _ = open_run(client, run, uri, [first, {"epoch": 2, "train_loss": 0.5}])  # resumed after epoch 2
    assert carried == started
    assert [(m.step, m.value) for m in client.get_metric_history(started, "train_loss")] == [(1, 1.0), (2, 0.5)]

    # the process died after logging epoch 2 and before saving it: the resumed run trains epoch 2 again
    redone, _ = open_run(client, run, uri, [first, {"epoch": 2, "train_loss": 0.7}])
    assert redone != started and client.get_run(started).info.lifecycle_stage == "deleted"
    assert [(m.step, m.value) for m in client.get_metric_history(redone, "train_loss")] == [(1, 1.0), (2, 0.7)]
    assert client.get_run(redone).data.params["train.epochs"] == "3"


def test_a_tracking_store_that_fails_during_training_costs_a_warning_not_the_run(tmp_path, caplog):
    from cnnarena.config import build_config
    from cnnarena.run import train_run
    from cnnarena.tracking.mlflow_live import LiveRun

    run = tmp_path / "run"
    (tmp_path / "file").write_text("")
    live = LiveRun(run, f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}")  # under a file: no store can be made
    cfg = build_config({}, {"data": "digits", "model": "simple-2conv", "epochs": 2, "fraction": 0.2,
                            "tensorboard": False, "out": str(run)})
    metrics = train_run(cfg, run, callbacks=[live])
    live.close()
    assert metrics["epochs_run"] == 2 and live.failed
    [warning] = [r.getMessage() for r in caplog.records if "MLflow at" in r.getMessage()]
    assert "logging live stops" in warning


def test_no_tensorboard_writes_no_events_and_a_bad_tracking_uri_is_one_line(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "digits", "--model", "simple-2conv", "--epochs", "1", "--fraction", "0.2",
                            "--no-tensorboard", "--out", str(run)], monkeypatch, capsys)
    assert code == 0, err
    assert not list(run.glob("events.out.tfevents.*"))
    code, _, err = run_cli(["train", "digits", "--mlflow", "mlruns", "--out", str(tmp_path / "other")],
                           monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: --mlflow 'mlruns' is not a tracking URI")
    assert not (tmp_path / "other").exists()  # refused before anything trained
    (tmp_path / "file").write_text("")
    unusable = f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"  # under a file: no store can be made there
    code, _, err = run_cli(["train", "digits", "--mlflow", unusable, "--out", str(tmp_path / "other")],
                           monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith(
        f"error: --mlflow: the tracking store at {unusable} cannot be used")
    assert not (tmp_path / "other").exists()
    without_proxies(monkeypatch)
    nobody = f"http://127.0.0.1:{free_port()}"  # MLflow's client would retry this for minutes
    code, _, err = run_cli(["train", "digits", "--mlflow", nobody, "--out", str(tmp_path / "other")],
                           monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"error: --mlflow: no tracking server answers at {nobody}: Connection refused")
    assert not (tmp_path / "other").exists()


def without_proxies(monkeypatch):
    """Loopback servers are reached directly, whatever proxy the machine running the tests sets."""
    import os

    for name in [n for n in os.environ if n.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")]:
        monkeypatch.delenv(name)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    """A real MLflow tracking server on loopback (SQLite backend, artefacts served by it); its URL."""
    import os
    import signal

    import httpx

    without_proxies(monkeypatch)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "server-artefacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the MLflow server did not start"
            time.sleep(0.05)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.slow  # starts an MLflow server (~10 s)
def test_a_run_logs_live_to_an_mlflow_tracking_server_over_http(mlflow_server, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "digits", "--model", "simple-2conv", "--epochs", "3", "--fraction", "0.3",
                            "--mlflow", mlflow_server, "--out", str(run)], monkeypatch, capsys)
    assert code == 0, err
    client = mlflow_client(mlflow_server)
    [logged] = client.search_runs([client.get_experiment_by_name("cnnarena").experiment_id])
    assert logged.info.status == "FINISHED" and logged.data.tags["cnnarena.run_dir"] == str(run)
    rows = history(run)
    assert [(m.step, m.value) for m in client.get_metric_history(logged.info.run_id, "val_accuracy")] == [
        (int(r["epoch"]), pytest.approx(float(r["val_accuracy"]))) for r in rows]
    assert logged.data.metrics["test_accuracy"] == pytest.approx(
        json.loads((run / "metrics.json").read_text())["test_accuracy"])
    artefacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"model.safetensors", "metrics.json", "history.csv", "plots"} <= artefacts
    assert not any(name.startswith(".") for name in artefacts)  # no lock files
    assert (tmp_path / "server-artefacts").exists()  # uploaded through the server, not written beside the run


@pytest.mark.slow  # a small study
def test_a_study_is_one_mlflow_parent_run_with_a_child_per_run(tmp_path, monkeypatch, capsys):
    study = tmp_path / "study"
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    argv = ["study", "digits", "--models", "simple-2conv", "--seeds", "2", "--epochs", "2", "--measure-seconds",
            "0.1", "--mlflow", uri, "--out", str(study)]
    code, _, err = run_cli(argv, monkeypatch, capsys)
    assert code == 0, err
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name("cnnarena").experiment_id
    found = client.search_runs([experiment])
    [parent] = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    run_dirs = sorted(p.parent for p in study.rglob("metrics.json"))
    assert len(children) == len(run_dirs) == 2 and len(found) == 3
    assert sorted(r.data.tags["cnnarena.run_dir"] for r in children) == [str(p.resolve()) for p in run_dirs]
    comparison = json.loads((study / "comparison.json").read_text())
    assert parent.data.metrics["accuracy.simple-2conv"] == pytest.approx(comparison["table"][0]["accuracy"])
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    for child in children:  # each epoch logged as it ended: before the run wrote metrics.json (log_run's cue)
        points = client.get_metric_history(child.info.run_id, "val_loss")
        finished_ms = (Path(child.data.tags["cnnarena.run_dir"]) / "metrics.json").stat().st_mtime * 1000
        assert [m.step for m in points] == [1, 2] and points[0].timestamp < points[1].timestamp <= finished_ms
    for run_dir in run_dirs:  # and TensorBoard sees every run of the study
        assert [e.step for e in events(run_dir).Scalars("loss/val")] == [1, 2]
    code, _, err = run_cli(argv, monkeypatch, capsys)  # a finished study, again: nothing logged twice
    assert code == 0, err
    assert len(client.search_runs([experiment])) == 3


@pytest.mark.slow  # three and then four one-epoch trials
def test_a_tune_search_is_one_mlflow_parent_run_with_a_child_per_finished_trial(tmp_path, monkeypatch, capsys):
    from cnnarena.tracking.mlflow_log import without_password

    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-3, high: 3.0e-2, log: true}\nbatch_size: 64\nepochs: 1\naugment: none\n")
    out, uri = tmp_path / "tune", f"sqlite:///{tmp_path / 'store.db'}"
    argv = ["tune", "digits", "--model", "simple-2conv", "--space", str(space), "--pruner", "none", "--mlflow", uri,
            "--out", str(out)]
    code, _, err = run_cli([*argv, "--trials", "3"], monkeypatch, capsys)
    assert code == 0, err
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name("cnnarena").experiment_id

    def parent_and_children():
        found = client.search_runs([experiment])
        [parent] = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
        return parent, [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]

    parent, children = parent_and_children()
    summary = json.loads((out / "tune.json").read_text())
    trial_dirs = sorted(p.parent for p in (out / "trials").rglob("metrics.json"))
    assert len(children) == len(trial_dirs) == 3
    assert sorted(r.data.tags["cnnarena.run_dir"] for r in children) == [str(p.resolve()) for p in trial_dirs]
    assert parent.data.metrics["best_value"] == pytest.approx(summary["best_value"])
    assert parent.data.metrics["best_test_accuracy"] == pytest.approx(summary["best_test_accuracy"])
    assert parent.data.params["model"] == "simple-2conv" and parent.data.params["pruner"] == "none"
    assert {"tune.json", "tune_report.html"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    code, _, err = run_cli([*argv, "--trials", "4"], monkeypatch, capsys)  # one more trial: one more child
    assert code == 0, err
    again, children = parent_and_children()
    assert again.info.run_id == parent.info.run_id and len(children) == 4
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "trials.complete")] == [3, 4]
    code, _, err = run_cli([*argv, "--trials", "4"], monkeypatch, capsys)  # nothing new: nothing logged
    assert code == 0, err
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "trials.finished")] == [3, 4]
    assert len(client.search_runs([experiment])) == 5
    client.delete_run(parent.info.run_id)  # a user deleted the search's run: the next call logs a new parent
    code, _, err = run_cli([*argv, "--trials", "4"], monkeypatch, capsys)
    assert code == 0, err
    renewed, children = parent_and_children()
    assert renewed.info.run_id != parent.info.run_id and len(children) == 4  # the trials' runs re-attached to it
    assert without_password("postgresql://user:secret@db/optuna") == "postgresql://user:***@db/optuna"
    assert "secret" not in without_password("postgresql+psycopg2://user@db/optuna?password=secret&sslmode=require")
