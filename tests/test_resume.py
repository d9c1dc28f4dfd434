"""A run killed at the worst moment and rerun trains exactly like one that was never interrupted, and a run
directory is never reused with other settings.

The kill is real (SIGKILL, no clean-up) and lands where it hurts most: right after the trainer state of an
epoch is committed, before the user-facing checkpoints/last.* and best.* copies are written.
"""

import json
import os
import subprocess
import sys

import pytest
from cli_run import KILL_AFTER_STATE, run_cli

from cnnarena.train.checkpoint import load_trainer_state

pytestmark = pytest.mark.slow  # every test trains in CLI subprocesses (and in-process CLI runs beside them)

# one thread: the same arithmetic in every process, so histories can be compared exactly
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FIELDS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


# like KILL_AFTER_STATE, but SIGKILLed right after committing the state of the epoch that early stopping ended
# (the first state with a stop reason): no need to know that epoch's number before the run starts
KILL_AFTER_STOPPING_STATE = KILL_AFTER_STATE.replace('if state["epoch"] == kill_at:', 'if state["stop_reason"]:')
assert KILL_AFTER_STOPPING_STATE != KILL_AFTER_STATE


def command(args, out, kill_at=None):
    if kill_at == "stopping":
        return [sys.executable, "-c", KILL_AFTER_STOPPING_STATE, "0", "train", *args, "--out", str(out)]
    if kill_at is not None:
        return [sys.executable, "-c", KILL_AFTER_STATE, str(kill_at), "train", *args, "--out", str(out)]
    return [sys.executable, "-m", "cnnarena.cli", "train", *args, "--out", str(out)]


def train(args, out, kill_at=None):
    return subprocess.run(command(args, out, kill_at), env=ENV, capture_output=True, text=True, timeout=300)


def train_side_by_side(*jobs):
    """The same as train(*job) for each job, the processes running at the same time (one thread each, so the
    arithmetic is the one of a process alone): their start-ups overlap on the two cores."""
    procs = [subprocess.Popen(command(*job), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for job in jobs]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def rows(run):
    return [{k: r[k] for k in FIELDS} for r in map(json.loads, (run / "history.jsonl").read_text().splitlines())]


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


def test_killed_and_resumed_run_trains_exactly_like_an_uninterrupted_one(tmp_path):
    # shuffling and shifts draw from the loader's generator; reduce-on-plateau (patience 1 at a high LR)
    # changes the LR mid-run: all of it must carry over the kill
    args = ["digits", "--model", "simple-2conv", "--epochs", "7", "--fraction", "0.3", "--batch-size", "16",
            "--lr", "5e-2", "--reduce-on-plateau", "1", "--augment", "translate=2"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    first, killed = train_side_by_side((args, whole), (args, broken, 3))
    assert first.returncode == 0, first.stderr[-2000:]
    assert killed.returncode == -9 and not (broken / "metrics.json").exists()
    again = train(args, broken)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stderr and "after epoch 3" in again.stderr
    assert rows(broken) == rows(whole)
    assert len({r["lr"] for r in rows(whole)}) > 1  # the plateau rule did act
    for key in ("test_accuracy", "test_loss", "best_epoch", "best_val_accuracy", "stop_reason"):
        assert metrics(broken)[key] == metrics(whole)[key], key


def test_a_run_killed_in_its_early_stopping_epoch_stays_stopped(tmp_path):
    args = ["digits", "--model", "simple-2conv", "--epochs", "40", "--fraction", "0.1", "--batch-size", "16",
            "--lr", "3e-2", "--early-stopping", "2"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    first, killed = train_side_by_side((args, whole), (args, broken, "stopping"))
    assert first.returncode == 0, first.stderr[-2000:]
    stopped_at = len(rows(whole))
    assert metrics(whole)["stop_reason"].startswith("early stopping") and stopped_at < 40
    assert killed.returncode == -9 and not (broken / "metrics.json").exists()
    # killed right after committing the state of the epoch early stopping ended, as kill_at=stopped_at did
    assert load_trainer_state(broken / "checkpoints" / "trainer_state.pt")["epoch"] == stopped_at
    again = train(args, broken)
    assert again.returncode == 0, again.stderr[-2000:]
    assert rows(broken) == rows(whole)  # not one epoch more
    assert metrics(broken)["stop_reason"] == metrics(whole)["stop_reason"]
    assert metrics(broken)["test_accuracy"] == metrics(whole)["test_accuracy"]
    best = metrics(whole)["best_epoch"]  # the kept weights' own validation accuracy
    assert metrics(whole)["best_val_accuracy"] == rows(whole)[best - 1]["val_accuracy"]


def test_a_run_directory_is_not_reused_with_other_settings(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    args = ["digits", "--model", "simple-2conv", "--epochs", "2", "--fraction", "0.2", "--batch-size", "8"]
    assert train(args, run, kill_at=1).returncode == -9
    for finished in (False, True):  # the killed run, then the same run once the first pass finished it
        code, _, err = run_cli(["train", *args, "--lr", "0.01", "--augment", "flip", "--out", str(run)], monkeypatch,
                               capsys)
        assert code == 2 and "Traceback" not in err
        assert err.strip().splitlines()[-1] == (
            f"error: {run} holds a run with other settings (train.augment {{}} -> {{'flip': True}}; "
            "train.lr 0.001 -> 0.01): pass another --out, or delete it to start over")
        # the same settings (a device or time budget may change) reuse or resume it
        code, _, err = run_cli(["train", *args, "--device", "cpu", "--max-minutes", "30", "--out", str(run)],
                               monkeypatch, capsys)
        assert code == 0, err[-2000:]
        assert ("resuming" in err) != finished
