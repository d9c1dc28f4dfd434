"""Real training runs on scikit-learn's digits: accuracy, early stopping, schedules, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cnnarena.config import build_config
from cnnarena.run import train_run
from cnnarena.train.config import TrainConfig
from cnnarena.train.schedule import build_optimizer, schedule_factor


def digits_cfg(**kw):
    return build_config(None, {"data": "digits", "model": "simple-2conv", "batch_size": 64, "lr": 2e-3, **kw})


def test_short_real_training_beats_90_percent(tmp_path):
    metrics = train_run(digits_cfg(epochs=6), tmp_path / "run")
    assert metrics["test_accuracy"] > 0.90
    assert metrics["macro_f1"] > 0.90
    for name in ("config.yaml", "split.json", "history.csv", "history.jsonl", "model.safetensors", "model.json",
                 "predictions.csv", "plots/curves.png", "plots/confusion_matrix.png", "plots/top_mistakes.png",
                 "checkpoints/best.safetensors", "checkpoints/last.safetensors"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    assert set(saved["per_class"]) == {str(i) for i in range(10)}
    assert sum(map(sum, saved["confusion_matrix"])) == saved["test_samples"] == 360


def test_early_stopping_restores_best_epoch(tmp_path):
    # 10% of digits and a high learning rate: validation loss turns up quickly.
    cfg = digits_cfg(epochs=40, fraction=0.1, lr=1e-2, early_stopping=3, batch_size=16)
    metrics = train_run(cfg, tmp_path / "run")
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    best = min(history, key=lambda r: r["val_loss"])
    assert metrics["stop_reason"].startswith("early stopping")
    assert metrics["best_epoch"] == best["epoch"]
    assert len(history) == best["epoch"] + 3 < 40
    # The saved model is the best epoch's weights, not the last epoch's.
    final = load_file(tmp_path / "run" / "model.safetensors")
    best_ckpt = load_file(tmp_path / "run" / "checkpoints" / "best.safetensors")
    last_ckpt = load_file(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert all(torch.equal(final[k], best_ckpt[k]) for k in final)
    assert not all(torch.equal(final[k], last_ckpt[k]) for k in final)


@pytest.mark.slow  # ~4 s: 12 epochs
def test_reduce_on_plateau_lowers_lr(tmp_path):
    cfg = digits_cfg(epochs=12, fraction=0.1, lr=1e-2, reduce_on_plateau=1, batch_size=16)
    train_run(cfg, tmp_path / "run")
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    start = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["lr"]  # as resolved
    assert lrs[0] == pytest.approx(start) and min(lrs) <= start / 2


@pytest.mark.parametrize("schedule, check", [
    ("constant", lambda f: f[0] == f[-1] == 1.0),
    ("cosine", lambda f: f[0] == 1.0 and f[-1] < 0.01),
    ("step", lambda f: f[0] == 1.0 and f[-1] == pytest.approx(0.5)),
    ("onecycle", lambda f: f[0] < 0.1 and max(f) == pytest.approx(1.0, abs=0.02) and f[-1] < 0.02),
])
def test_schedules(schedule, check):
    cfg = TrainConfig(epochs=10, schedule=schedule, step_size=5)
    factors = [schedule_factor(cfg, s, 10) for s in range(100)]
    assert check(factors)


def test_warmup_ramps_up():
    cfg = TrainConfig(epochs=10, schedule="constant", warmup_epochs=2)
    assert schedule_factor(cfg, 0, 10) == pytest.approx(0.05)
    assert schedule_factor(cfg, 19, 10) == 1.0


@pytest.mark.slow  # training subprocesses, 6 epochs
def test_killed_run_resumes_from_last_epoch(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cnnarena.cli", "train", "digits", "--epochs", "6", "--batch-size", "16",
           "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    history = run / "history.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not history.exists() or len(history.read_text().splitlines()) < 2):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up: like a power cut
    proc.wait()
    done_before = len(history.read_text().splitlines())
    assert 2 <= done_before < 6 and not (run / "metrics.json").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    epochs = [json.loads(line)["epoch"] for line in history.read_text().splitlines()]
    assert epochs == list(range(1, 7))
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] > 0.9


def test_small_training_sets_get_a_smaller_batch_and_scaled_lr():
    cfg = TrainConfig(batch_size=256, lr=0.2)
    adapted, note = cfg.fit_to_data(1077)
    assert (adapted.batch_size, adapted.lr) == (64, pytest.approx(0.05)) and "1,077" in note
    same, note = cfg.fit_to_data(60_000)
    assert same is cfg and note is None


@pytest.mark.parametrize("name, kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                        ("sgd", torch.optim.SGD)])
def test_optimizers_use_the_fused_kernels_on_cpu_and_still_learn(name, kind):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = build_optimizer([{"params": [w], "lr": 0.1}], TrainConfig(optimizer=name, lr=0.1, nesterov=True))
    assert isinstance(opt, kind) and opt.defaults["fused"] is True
    for _ in range(100):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    assert w.abs().max() < 0.5  # it minimised
