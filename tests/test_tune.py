"""`cnnarena tune`: Optuna trials as normal runs, pruning, the report, and workers sharing a PostgreSQL study."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from postgres import kill_after_epochs, pg_bin, postgres_server

SPACE = "lr: {low: 1.0e-3, high: 3.0e-2, log: true}\nbatch_size: {choices: [32, 64]}\nepochs: {low: 3, high: 6}\n" \
        "augment: none\n"


def tune(tmp_path: Path, *args: str, wait: bool = True, **kw):
    space = tmp_path / "space.yaml"
    if not space.exists():
        space.write_text(SPACE)
    command = [sys.executable, "-m", "cnnarena", "tune", "digits", "--model", "simple-2conv", "--space", str(space),
               *args]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow  # 8 short trainings
def test_a_search_with_sqlite_writes_normal_runs_a_report_and_resumes(tmp_path):
    out, uri = tmp_path / "t", f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = tune(tmp_path, "--trials", "8", "--out", str(out), "--mlflow", uri)
    summary = json.loads((out / "tune.json").read_text())
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 8 and summary["trials"]["pruned"] >= 1
    best = Path(summary["best_run_dir"])
    metrics = json.loads((best / "metrics.json").read_text())
    assert metrics["best_val_accuracy"] == summary["best_value"] and "run directory:" in done.stdout
    assert set(summary["best_params"]) == {"lr", "batch_size", "epochs"} and summary["importance"]
    pruned = [r for r in summary["rows"] if r["state"] == "pruned"]
    for row in pruned:  # a pruned trial stopped after the epoch it was pruned at
        history = (Path(row["run_dir"]) / "history.jsonl").read_text().splitlines()
        assert len(history) == row["epochs_reported"] <= row["params"]["epochs"]
        assert not (Path(row["run_dir"]) / "metrics.json").exists()
    assert any(r["epochs_reported"] < r["params"]["epochs"] for r in pruned)  # pruning saved epochs
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("cnnarena").experiment_id
    children = {r.data.tags["cnnarena.run_dir"]: r for r in client.search_runs([experiment])
                if "mlflow.parentRunId" in r.data.tags}
    assert len(children) == 8  # every trial, pruned ones too
    for row in summary["rows"]:
        child = children[str(Path(row["run_dir"]).resolve())]
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")]
        assert steps == list(range(1, row["epochs_reported"] + 1))
        assert (child.info.status, child.data.tags.get("cnnarena.state")) == (
            ("KILLED", "pruned") if row["state"] == "pruned" else ("FINISHED", None))
    html = (out / "tune_report.html").read_text()  # read before the second search writes it again
    assert 'id="history-chart"' in html and 'id="importance"' in html and html.count("<tr>") == 9
    # evaluate (writes evaluation.json in the best run) beside the second search (trains nothing, rewrites
    # tune.json and the report): independent, and each is mostly its process's start-up
    evaluate = subprocess.Popen([sys.executable, "-m", "cnnarena", "evaluate", str(best)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        again = tune(tmp_path, "--trials", "8", "--out", str(out), "--mlflow", uri)  # enough trials: none trains
        _, evaluate_err = evaluate.communicate(timeout=120)
    finally:
        if evaluate.poll() is None:
            evaluate.kill()
            evaluate.communicate()
    assert evaluate.returncode == 0, evaluate_err  # the best trial is a normal run
    assert "trial" not in again.stderr.replace("best trial", "")
    assert len(client.search_runs([experiment])) == 9  # and nothing is logged twice


@pytest.mark.slow  # two CLI processes
def test_a_bad_space_or_storage_is_one_line(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("lr: {low: 1.0e-3}\n")
    cases = {  # both processes at once: each spends most of its time importing
        "space": ["--space", str(bad), "--out", str(tmp_path / "o")],
        "storage": ["--storage", "postgresql+psycopg2://nobody@127.0.0.1:1/none", "--out", str(tmp_path / "p")],
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", "cnnarena", "tune", "digits", "--model", "simple-2conv",
                                     *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, args in cases.items()}
    done = {name: (proc.communicate(timeout=120)[1], proc.returncode) for name, proc in procs.items()}
    assert done["space"][1] == 2 and "lr needs low and high, or choices" in done["space"][0]
    stderr, code = done["storage"]
    assert code == 2 and stderr.startswith("error: --storage postgresql+psycopg2://nobody@127.0.0.1:1/none")
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a PostgreSQL server and three worker processes
@pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (make test installs Debian's postgresql)")
def test_workers_share_a_postgresql_study_and_a_killed_workers_trial_is_retried(tmp_path):
    with postgres_server() as url:
        out = tmp_path / "t"
        short = tmp_path / "short.yaml"  # trials of 2-3 epochs: sharing is what is tested, not the search
        short.write_text(SPACE.replace("epochs: {low: 3, high: 6}", "epochs: {low: 2, high: 3}"))
        common = ("--space", str(short), "--storage", url, "--study-name", "shared", "--out", str(out), "--pruner",
                  "none", "--heartbeat", "1")
        workers = [tune(tmp_path, "--trials", "6", *common, wait=False) for _ in range(2)]
        for w in workers:
            _, err = w.communicate(timeout=600)
            assert w.returncode == 0, err[-3000:]
        summary = json.loads((out / "tune.json").read_text())
        rows = [r for r in summary["rows"] if r["state"] == "complete"]
        assert 6 <= len(rows) <= 7  # a worker may start one trial while the other finishes the sixth
        assert len({r["run_dir"] for r in rows}) == len(rows)  # every trial trained once, in a run of its own
        for r in rows:
            history = [json.loads(x) for x in (Path(r["run_dir"]) / "history.jsonl").read_text().splitlines()]
            assert [h["epoch"] for h in history] == list(range(1, r["params"]["epochs"] + 1))  # none twice

        # a worker SIGKILLed mid-trial: another worker fails the silent trial and retries it in the same run
        # directory, which resumes after the epochs the killed one finished
        slow = tmp_path / "slow.yaml"
        slow.write_text("lr: 1.0e-3\nbatch_size: 16\nepochs: 6\naugment: none\n")
        killed_common = ("--space", str(slow), "--storage", url, "--study-name", "killed", "--out",
                         str(tmp_path / "k"), "--heartbeat", "1", "--pruner", "none")
        victim = tune(tmp_path, "--trials", "1", *killed_common, wait=False, start_new_session=True)
        history = tmp_path / "k" / "trials" / "0000" / "history.jsonl"
        epochs_before = kill_after_epochs(victim, history)
        assert epochs_before < 6
        time.sleep(4)  # past the grace period of 3 heartbeats
        survivor = tune(tmp_path, "--trials", "1", *killed_common)
        summary = json.loads((tmp_path / "k" / "tune.json").read_text())
        assert summary["trials"]["fail"] == 1 and summary["trials"]["complete"] == 1
        retry = next(r for r in summary["rows"] if r["state"] == "complete")
        assert retry["number"] == 1 and retry["run_dir"].endswith("trials/0000")
        assert "resuming" in survivor.stderr and "(retry of 0)" in survivor.stderr
        epochs = [json.loads(x)["epoch"] for x in history.read_text().splitlines()]
        assert epochs == list(range(1, 7))
