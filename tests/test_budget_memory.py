"""Time budgets (--budget) and the memory plan (--max-memory, gradient accumulation), on real trainings."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from cnnarena.config import build_config
from cnnarena.errors import UserError
from cnnarena.models.artefacts import load_model
from cnnarena.models.resolution import auto_input_size
from cnnarena.run import train_run
from cnnarena.train.callbacks import Callback
from cnnarena.train.config import TrainConfig, parse_duration
from cnnarena.train.loop import _accumulate
from cnnarena.train.memory_plan import MemoryEstimate, parse_memory, plan


def digits_cfg(**kw):
    return build_config(None, {"data": "digits", "model": "simple-2conv", "batch_size": 64, "lr": 2e-3, **kw})


def _wall(history):
    return sum(r["epoch_seconds"] + r.get("val_seconds", 0) for r in history)


def test_durations_and_sizes_parse_or_fail_clearly():
    assert parse_duration("20m") == 1200 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    assert parse_duration("2") == 120  # a bare number is minutes, like --max-minutes
    assert parse_memory("4GB") == 4 * 2**30 and parse_memory("800M") == 800 * 2**20 and parse_memory("3.5g")
    assert parse_memory("auto") is None and parse_memory("none") == 0
    for bad in ("soon", "-3m", "0"):
        with pytest.raises(UserError, match="--budget expects"):
            parse_duration(bad)
    with pytest.raises(UserError, match="--max-memory expects"):
        parse_memory("lots")
    with pytest.raises(UserError, match="below 64 MB"):
        parse_memory("10M")


@pytest.mark.slow  # budgeted training runs
def test_a_budget_plans_the_epochs_that_fit_and_keeps_the_best_weights(tmp_path):
    run = tmp_path / "run"
    metrics = train_run(digits_cfg(epochs=2, budget="6s", schedule="cosine"), run)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    # the recipe said 2 epochs; the budget holds many more, and the schedule was planned to end with them
    assert metrics["epochs_run"] > 2
    assert _wall(history) <= 6 * 1.1 + 0.5
    assert "time budget of 6s" in metrics["stop_reason"]
    assert history[-1]["lr"] < 0.25 * 2e-3  # cosine annealed towards its planned end, not cut off at full LR
    # the evaluated model holds the best epoch's weights (by val_loss), and they reproduce that epoch's val accuracy
    best = min(history, key=lambda r: r["val_loss"])
    assert metrics["best_epoch"] == best["epoch"]
    from cnnarena.data.loader import BatchLoader
    from cnnarena.data.sources import load_data
    from cnnarena.data.split import load_manifest
    from cnnarena.train.loop import evaluate_loader
    from cnnarena.train.precision import autocast_for, uses_bf16

    model = load_model(run / "model")
    split = load_manifest(run / "split.json", load_data(digits_cfg()))
    cpu = torch.device("cpu")  # validated in the precision it trained in (bf16 on a CPU with bf16 instructions)
    autocast = autocast_for(cpu, uses_bf16(cpu, None, model.meta.family))
    _, val_acc = evaluate_loader(model, BatchLoader(split.val, 512), autocast)
    assert val_acc == pytest.approx(best["val_accuracy"], abs=1e-6)


class StallsInTheThirdEpoch(Callback):
    """A machine that stalls once the plan is made (a noisy neighbour, a swapped-out page): the third epoch, planned to
    fit, stalls until just past the budget. The stop must come at the next step, not at the epoch's end."""

    def on_train_begin(self, s):
        self.t0 = time.perf_counter()

    def on_batch_end(self, s, batch, num_batches):
        if s.epoch == 2 and batch == 10:
            time.sleep(max(0.0, self.t0 + 5.2 - time.perf_counter()))


@pytest.mark.slow  # a budgeted training run
def test_a_budget_stops_mid_epoch_on_time_when_the_machine_slows_down(tmp_path, monkeypatch):
    import cnnarena.run as run_module

    real = run_module.standard_callbacks
    monkeypatch.setattr(run_module, "standard_callbacks",
                        lambda cfg, run_dir: [*real(cfg, run_dir), StallsInTheThirdEpoch()])
    t0 = time.perf_counter()
    metrics = train_run(digits_cfg(epochs=2, budget="5s", batch_size=16), tmp_path / "run")
    assert metrics["stop_reason"] == "time budget of 5s reached after 10 of 68 steps of an epoch"
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert _wall(history) <= 5 + 0.7  # the stall's 0.2 s past the deadline and one validation pass
    assert metrics["test_accuracy"] > 0.5 and time.perf_counter() - t0 < 30


def test_a_budget_too_small_for_one_epoch_is_one_error_with_the_estimate(tmp_path):
    cfg = build_config(None, {"data": "digits", "model": "fast", "budget": "0.05s", "batch_size": 8})
    with pytest.raises(UserError, match=r"--budget 0.05s: one epoch of this model takes about .* s here"):
        train_run(cfg, tmp_path / "run")


def test_micro_batches_add_up_to_the_whole_batch_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(10, 3, 2, 2), torch.randint(0, 4, (10,))
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    cfg = TrainConfig(label_smoothing=0.1, micro_batch=3)
    nn.functional.cross_entropy(net(x), y, weight=weight, label_smoothing=0.1).backward()
    whole = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    from contextlib import nullcontext

    logits, loss = _accumulate(net, x, y, cfg, nullcontext, weight)
    assert logits.shape == (10, 4)
    for g, p in zip(whole, net.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(net(x), y, weight=weight,
                                                                     label_smoothing=0.1).item(), rel=1e-5)


def test_the_plan_splits_the_batch_to_fit_and_refuses_what_cannot():
    est = MemoryEstimate(fixed=100 << 20, train_per_sample=10 << 20, eval_per_sample=2 << 20)
    p = plan(est, 64, 1024, budget=1 << 30, held=500 << 20, what="m")
    # 90% of 1024 - 500 held - 160 for the first steps - 100 fixed = 161 MB of room: 16 images; 64 in 4 of 16
    assert p.micro_batch == 16 and "4 micro-batches" in p.note and p.estimate <= 1 << 30
    assert p.eval_batch < 1024
    assert plan(est, 32, 64, budget=4 << 30, held=500 << 20, what="m").note is None
    with pytest.raises(UserError, match=r"m does not fit in 0.6 GB of memory: it needs about .* per image"):
        plan(est, 64, 1024, budget=600 << 20, held=500 << 20, what="m")


def test_test_time_shifts_charge_the_padded_copy_and_a_view_to_each_evaluated_image():
    from cnnarena.evaluate.inference import tta_views
    from cnnarena.train.memory_plan import with_shifted_views

    est = MemoryEstimate(fixed=100 << 20, train_per_sample=10 << 20, eval_per_sample=2 << 20)
    assert with_shifted_views(est, 3, (224, 224), 0) == est
    shifted = with_shifted_views(est, 3, (224, 224), 1)
    x = torch.rand(2, 3, 224, 224)
    padded = torch.nn.functional.pad(x, (1,) * 4, mode="reflect")
    one_view = list(tta_views(x, 1))[2].contiguous()  # a shifted view, as a network copies it
    assert shifted.eval_per_sample - est.eval_per_sample == (padded.nbytes + one_view.nbytes) // 2
    budget = dict(budget=1 << 30, held=500 << 20, what="m")
    assert plan(shifted, 64, 1024, **budget).eval_batch < plan(est, 64, 1024, **budget).eval_batch


def test_small_images_get_a_resolution_from_their_size():
    assert auto_input_size((28, 28), (224, 224)) == (48, 48)
    assert auto_input_size((32, 32), (224, 224)) == (48, 48)
    assert auto_input_size((8, 8), (224, 224)) == (48, 48)
    assert auto_input_size((40, 40), (224, 224)) == (64, 64)
    assert auto_input_size((64, 64), (224, 224)) == (64, 64)
    assert auto_input_size((100, 120), (224, 224)) == (112, 112)
    assert auto_input_size((300, 300), (224, 224)) == (224, 224)
    assert auto_input_size((8, 8), (224, 224), minimum=75) == (75, 75)


@pytest.mark.slow  # a backbone's epochs timed at several sizes
def test_the_run_says_the_resolution_it_chose(tmp_path, caplog):
    from cnnarena import runtime

    with runtime.using(console=True), caplog.at_level("INFO", logger="cnnarena"):
        metrics = train_run(build_config(None, {"data": "digits", "model": "efficientnet_lite0", "fraction": 0.2,
                                                "freeze_epochs": 1, "epochs": 1}), tmp_path / "run")
    first = [r.getMessage() for r in caplog.records][0]
    assert first == "model: efficientnet_lite0 (pretrained) at 48x48 px (chosen for 8x8 images; --input-size overrides)"
    assert load_model(tmp_path / "run" / "model").meta.input_size == (48, 48)
    assert metrics["memory_budget_gb"] > 0


PEAK_SCRIPT = """
import json, resource, sys, threading, time
from cnnarena import runtime
from cnnarena.config import build_config
from cnnarena.machine import allocated_bytes
from cnnarena.run import train_run
# val and test cut to 90 images each (fewer evaluation passes and smaller plots); the fraction keeps the training set
# at ~1,079 images (>= 16 x 64: batch 64 is not shrunk by fit_to_data, 17 steps an epoch as before), so the training
# batch whose activations set the peak is the same
cfg = build_config(None, {"data": "digits", "model": "efficientnet_lite0", "input_size": 96, "freeze_epochs": 0,
                          "epochs": 1, "batch_size": 64, "max_memory": sys.argv[2], "val_frac": 0.05,
                          "test_frac": 0.05, "fraction": 0.667})
runtime.configure(console=True)  # the run's notes on stderr, as the CLI prints them
peak = {"allocated": 0}
def sample():  # the budget counts allocated (anonymous) memory: its peak, sampled every 5 ms
    while True:
        peak["allocated"] = max(peak["allocated"], allocated_bytes())
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
m = train_run(cfg, sys.argv[1])
print(json.dumps({"allocated": peak["allocated"], "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "micro": m["micro_batch"], "cap": m["memory_budget_gb"], "est": m["memory_estimate_gb"]}))
"""


@pytest.mark.slow  # two fine-tunes in subprocesses
def test_a_memory_cap_bounds_the_peak_with_the_same_effective_batch(tmp_path):
    # the two runs at once, one core each: each process's peak is its own (RssAnon of that process), and neither
    # run's memory plan depends on the other (max_memory is none or an explicit size, not auto)
    env = {**os.environ, "CNNARENA_FUSED_KERNELS": "0", "OMP_NUM_THREADS": "1"}

    def start(name, cap):
        return subprocess.Popen([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / name), cap],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def result(process):
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
        return json.loads(stdout.strip().splitlines()[-1]), stderr

    capped_at = 1100 * 2**20  # batch 64 at 96 px needs ~1.5 GB of activations: it must run as micro-batches
    processes = {"free": start("free", "none"), "capped": start("capped", "1100M")}
    try:
        free, _ = result(processes["free"])
        capped, log = result(processes["capped"])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert free["allocated"] > 1.4 * capped_at, free
    assert free["micro"] is None and capped["micro"] is not None and 2 < capped["micro"] < 64, (capped, free)
    assert "gradient accumulation" in log
    # Allocator slack and what grows after the plan are not modelled: held to 15% over the cap (measured standalone
    # and in the full suite: under it), and well under the uncapped peak.
    assert capped["allocated"] <= capped_at * 1.15 and capped["allocated"] < 0.7 * free["allocated"], \
        f"capped {capped} free {free}"
    # the same effective batch: as many optimizer steps per epoch, the same samples
    for name in ("free", "capped"):
        cfg = (tmp_path / name / "config.yaml").read_text()
        assert "batch_size: 64" in cfg


def test_a_backbone_too_large_for_the_memory_cap_is_one_error_with_the_figures(tmp_path):
    """Lite0 at 2,048 px: the estimate is taken at 128 px and scaled, so estimating costs no gigabytes."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = build_config(None, {"data": "digits", "model": "efficientnet_lite0", "input_size": 2048,
                              "max_memory": "1GB", "fraction": 0.1})
    with pytest.raises(UserError, match=r"efficientnet_lite0 at batch \d+ does not fit in 1.0 GB of memory: it needs "
                                        r"about [\d.]+ GB at batch 1 .* MB per image\); raise --max-memory"):
        train_run(cfg, tmp_path / "run")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 1 << 20  # KiB: under 1 GB more
