"""The training loop picks its thread count by measurement: on a CPU that other programs keep busy, one thread
beats two (every op's barrier waits for a thread the scheduler set aside)."""

import logging
import os
import subprocess
import sys

import pytest
import torch

from cnnarena import runtime
from cnnarena.cli import main
from cnnarena.config import build_config
from cnnarena.data.dataset import ImageSet
from cnnarena.data.loader import BatchLoader
from cnnarena.models.registry import create_model
from cnnarena.train import threads
from cnnarena.train.loop import fit
from cnnarena.train.threads import MARGIN, ThreadChooser


def test_fewer_threads_win_only_by_a_clear_margin():
    chooser = ThreadChooser(2)
    chooser.start_probe(0.0)
    assert chooser.candidates == [2, 1] and chooser.pending() == 2
    chooser.record(2, 1000.0)
    assert chooser.pending() == 1 and chooser.best == 2  # nothing decided before every candidate is measured
    chooser.record(1, 1000.0 * MARGIN * 0.99)
    assert chooser.pending() is None and chooser.best == 2  # within noise: keep the cores
    chooser.start_probe(0.0)
    chooser.record(2, 300.0)
    chooser.record(1, 1500.0)
    assert chooser.best == 1
    assert ThreadChooser(8).candidates == [8, 4, 1]


def test_a_choice_that_holds_is_rechecked_less_often_and_a_slowdown_triggers_a_recheck():
    chooser = ThreadChooser(2)
    intervals = []
    for k in range(6):
        chooser.start_probe(float(k))
        chooser.record(2, 3000.0)
        chooser.record(1, 1700.0)
        intervals.append(chooser.interval)
    assert intervals == [60, 120, 240, 240, 240, 240] and chooser.best == 2
    assert not chooser.due(chooser.probed_at + 100, rate=2900.0)
    assert chooser.due(chooser.probed_at + 100, rate=1000.0)  # another program took a core: probe now
    assert chooser.due(chooser.probed_at + 240, rate=2900.0)
    chooser.start_probe(0.0)
    chooser.record(2, 300.0)
    chooser.record(1, 1500.0)
    assert chooser.best == 1 and chooser.interval == 30  # a change: back to frequent checks
    chooser.start_probe(0.0)
    chooser.record(2, 300.0)
    chooser.record(1, 1500.0)
    assert chooser.best == 1 and chooser.interval == 30  # on fewer threads it keeps looking for the cores


def test_a_window_of_slow_steps_holds_several_of_them(monkeypatch):
    """A backbone's step takes ~0.4 s, longer than a window's 0.3 s: one step alone must not decide a probe."""
    from types import SimpleNamespace

    ticks = iter(0.4 * k for k in range(100))
    monkeypatch.setattr(threads, "_CHOOSERS", {})
    tuner = threads.ThreadTuner(2, clock=lambda: next(ticks))
    before = torch.get_num_threads()
    try:
        tuner.chooser.start_probe(-1.0)
        tuner.measuring = tuner.chooser.pending()  # measuring 2 threads
        state = SimpleNamespace(epoch=1, progress=SimpleNamespace(seen=0))
        for step in range(1 + threads.WINDOW_STEPS):  # the first call opens the window
            state.progress.seen = 64 * step
            assert tuner.chooser.rates == {}, f"decided after {step - 1} step(s)"
            tuner.after_step(state)
        assert tuner.chooser.rates == {2: pytest.approx(64 / 0.4)}
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def busy_cpu():
    """Every core kept busy by another process, as on a laptop that is doing something else."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    yield
    for p in procs:
        p.kill()
        p.wait()


@pytest.mark.slow  # busy-loop subprocesses on every core, timing
@pytest.mark.alone  # the busy cores must be its own
def test_on_a_busy_cpu_training_drops_to_one_thread_and_gives_the_threads_back(busy_cpu, monkeypatch, caplog):
    monkeypatch.setattr(threads, "_CHOOSERS", {})  # no decision carried over from another test
    monkeypatch.setattr(threads, "WINDOW_SECONDS", 0.5)
    # several probes in one epoch, judged by their majority; a probe every second, as the epoch lasts a few (on a fast
    # day of this machine, doubling the interval left room for only two)
    monkeypatch.setattr(threads, "FIRST_RECHECK", 1.0)
    monkeypatch.setattr(threads, "LAST_RECHECK", 1.0)
    decisions = []
    record = ThreadChooser.record

    def recording(chooser, n, rate):
        record(chooser, n, rate)
        if not chooser.probing:
            decisions.append((chooser.best, dict(chooser.rates)))

    monkeypatch.setattr(ThreadChooser, "record", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        n, classes = 12800, [str(i) for i in range(10)]
        data = ImageSet(torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (n,)),
                        classes, [str(i) for i in range(n)])
        cfg = build_config(None, {"model": "simple-2conv", "batch_size": 16, "epochs": 1, "device": "cpu"}).train
        model = create_model("simple-2conv", num_classes=10, in_chans=1, data_size=(28, 28), classes=classes)
        # validation is never probed (epoch boundaries are unmeasured): one batch of it is enough
        val = ImageSet(data.images[:1024], data.labels[:1024], classes, data.ids[:1024])
        with runtime.using(tune_threads=True), caplog.at_level(logging.INFO, logger="cnnarena"):  # as the CLI
            fit(model, BatchLoader(data, 16, shuffle=True, channels_last=True),
                BatchLoader(val, 1024, channels_last=True), cfg)
        # one probe is two half-second windows, and whether two threads stall depends on how the scheduler places
        # them beside the busy loops in that second: CI saw two threads as fast as one in 3 of 6 probes. So: the
        # busy CPU makes some probe choose one thread, and every probe keeps the count it measured faster
        assert len(decisions) >= 3, decisions
        assert any(best == 1 for best, _ in decisions), decisions
        for best, rates in decisions:
            assert best == (1 if rates[1] > MARGIN * rates[2] else 2), (best, rates)
        assert any("training on 1 of 2 threads (2: " in r.getMessage() for r in caplog.records)  # said once
        assert torch.get_num_threads() == 2  # fit leaves the process as it found it
    finally:
        torch.set_num_threads(before)


def test_deterministic_runs_and_the_opt_out_keep_the_thread_count(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # as on any machine with two or more cores
    with runtime.using(tune_threads=True):  # what the CLI opts into
        assert threads.ThreadTuner.wanted(deterministic=False)
        assert not threads.ThreadTuner.wanted(deterministic=True)
    assert not threads.ThreadTuner.wanted(deterministic=False)  # a library caller who did not opt in


def test_the_cli_opts_into_thread_tuning_unless_told_not_to(monkeypatch, capsys):
    for value, want in (("1", True), ("0", False)):
        monkeypatch.setenv("CNNARENA_THREAD_TUNING", value)
        monkeypatch.setattr(sys, "argv", ["cnnarena", "--version"])
        with runtime.using():  # the settings main() chose are put back afterwards
            with pytest.raises(SystemExit):
                main()
            assert runtime.settings().tune_threads is want and runtime.settings().tune_malloc
    assert not runtime.settings().tune_threads  # the library alone never opts in
