"""`cnnarena study --storage`: workers share a study's runs through Optuna on a real PostgreSQL server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from postgres import kill_after_epochs, pg_bin, postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (make "
                                                                            "test installs Debian's postgresql)")]

STUDY = {"data": "digits", "models": ["simple-2conv", "simple-3conv-5x5"], "seeds": 1, "fractions": [0.5, 1.0],
         "lrs": [1e-3, 1e-2], "lr_epochs": 1, "epochs": 2, "measure_seconds": 0.2}


def worker(tmp_path: Path, url: str, out: Path, study: dict, name: str, *extra: str, **kw) -> subprocess.Popen:
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(study))
    return subprocess.Popen([sys.executable, "-m", "cnnarena", "study", "--config", str(config), "--out", str(out),
                             "--storage", url, "--study-name", name, "--heartbeat", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_two_workers_share_the_runs_and_a_killed_workers_run_is_retried(tmp_path):
    with postgres_server() as url:
        out = tmp_path / "s"
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # new: both workers set it up at once, taking turns
        workers = [worker(tmp_path, url, out, STUDY, "shared", "--mlflow", uri) for _ in range(2)]
        logs = []
        for w in workers:
            stdout, stderr = w.communicate(timeout=900)
            assert w.returncode == 0, stderr[-3000:]
            logs.append(stderr)
        trained = [key for log in logs for key in re.findall(r"\[worker\] (.+?)(?: \(retry|$)", log, re.M)
                   if not key.startswith("every run is done")]
        assert sum("every run is done; another worker" in log for log in logs) == 1  # one report, one writer
        # 2 LR runs + 2 models x 2 fractions: each trained by one worker, once
        assert sorted(trained) == sorted({*trained}) and len(trained) == 6, trained
        assert all(log.count("[worker] lr ") + log.count("[worker] simple") >= 1 for log in logs)  # both worked
        comparison = json.loads((out / "comparison.json").read_text())
        assert {r["model"] for r in comparison["table"]} == set(STUDY["models"])
        assert (out / "report.html").stat().st_size > 10_000
        for run in (out / "runs").glob("*/*"):
            epochs = [json.loads(x)["epoch"] for x in (run / "history.jsonl").read_text().splitlines()]
            assert epochs == [1, 2], run
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        found = client.search_runs([client.get_experiment_by_name("cnnarena").experiment_id])
        [parent] = [r for r in found if "mlflow.parentRunId" not in r.data.tags]  # one, whichever worker opened it
        children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == len(found) - 1 == 6 and parent.info.status == "FINISHED"
        for child in children:  # every epoch once, each logged live by the worker that trained it
            run_dir = Path(child.data.tags["cnnarena.run_dir"])
            rows = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
            points = client.get_metric_history(child.info.run_id, "val_loss")
            assert [(m.step, m.value) for m in points] == [(r["epoch"], r["val_loss"]) for r in rows]
            assert points[-1].timestamp <= (run_dir / "metrics.json").stat().st_mtime * 1000
            assert child.info.status == "FINISHED"

        slow = {**STUDY, "models": ["simple-2conv"], "lrs": [], "fractions": [1.0], "epochs": 6, "batch_size": 16}
        out = tmp_path / "k"
        victim = worker(tmp_path, url, out, slow, "killed", start_new_session=True)
        history = out / "runs" / "simple-2conv" / "f=1-s=0" / "history.jsonl"
        assert kill_after_epochs(victim, history) < 6
        time.sleep(4)  # past the grace period of 3 heartbeats
        survivor = worker(tmp_path, url, out, slow, "killed")
        _, stderr = survivor.communicate(timeout=900)
        assert survivor.returncode == 0, stderr[-3000:]
        assert "(retry of trial 0)" in stderr and "resuming" in stderr
        assert [json.loads(x)["epoch"] for x in history.read_text().splitlines()] == list(range(1, 7))
        assert (out / "report.html").exists()
