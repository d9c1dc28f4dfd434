"""Files a folder can hold (issue 33, group 4): a FIFO among the images, a looping link, a killed decode. Nothing
blocks, the workers die with their parent, and the next decode removes what a killed one left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from cnnarena.data.sources import load_source


def _images(folder: Path, count: int, side: int = 32) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / name / f"{i}.jpg")


@pytest.mark.slow  # a child process, so that a regression hangs it and not the suite
def test_a_fifo_and_a_looping_link_are_skipped_not_opened(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNARENA_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    _images(data, 4)
    os.mkfifo(data / "a" / "pipe.jpg")  # opening it for reading blocks until a writer comes: never
    os.symlink("loop.jpg", data / "b" / "loop.jpg")
    code = ("import sys; from cnnarena.data.sources import load_source; s = load_source(sys.argv[1]); "
            "print(len(s.pool), sorted(r for _, r in s.skipped))")
    done = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CNNARENA_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    count, reasons = done.stdout.split(" ", 1)
    assert count == "8" and reasons.count("not a regular file") == 2


@pytest.mark.slow  # 600 JPEGs written and decoded in worker processes
def test_a_killed_decode_leaves_no_workers_and_its_temporary_files_go_next_time(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    _images(data, 300, side=384)  # 600 files: decoded in worker processes, for a few seconds
    env = {**os.environ, "CNNARENA_CACHE": str(cache)}
    parent = subprocess.Popen([sys.executable, "-m", "cnnarena", "doctor", str(data), "--out", str(tmp_path / "d")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(workers) < 2:
        workers = psutil.Process(parent.pid).children()
        time.sleep(0.05)
    leftovers = list((cache / "images").glob(".*raw.npy"))
    assert workers and leftovers, "the decode did not start in worker processes"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"{len(alive)} decode worker(s) outlived their parent"
    load_source(str(data), cache_dir=cache / "images")  # the next decode cleans up after the killed one
    assert not any(p.exists() for p in leftovers)


def test_a_split_with_no_validation_images_is_refused_before_training(tmp_path, monkeypatch, capsys):
    import json

    from cli_run import run_cli

    from cnnarena.data.sources import load_source

    ids = load_source("digits").pool.ids
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ids[:1000], "val": [], "test": ids[1000:]}))
    code, _, err = run_cli(["train", "digits", "--split", str(split), "--out", str(tmp_path / "run")], monkeypatch,
                           capsys)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "the val list is empty" in lines[0], err
    assert not (tmp_path / "run").exists()
    split.write_text(json.dumps({"train": ids[:1000], "val": ids[:10], "test": ids[1000:]}))
    code, _, err = run_cli(["train", "digits", "--split", str(split), "--out", str(tmp_path / "run")], monkeypatch,
                           capsys)
    assert code != 0 and "are in train and in val or test" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("input_size", ["abc", [0, 0], [100000, 100000]])
def test_a_hand_edited_input_size_in_model_json_is_one_line(input_size, digits_run, tmp_path, monkeypatch, capsys):
    import json
    import shutil

    from cli_run import run_cli

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    meta = json.loads((run / "model.json").read_text())
    meta["model"]["input_size"] = input_size
    (run / "model.json").write_text(json.dumps(meta))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    for argv in (["predict", str(run), str(tmp_path / "x.png")], ["export", str(run)]):
        code, _, err = run_cli(argv, monkeypatch, capsys)
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and "corrupt model metadata" in lines[0] and "input_size" in lines[0]


@pytest.mark.parametrize(("key", "value"), [("mean", [float("nan")]), ("std", [0.0]), ("std", "wide"),
                                          ("classes", ["only-one"]), ("classes", ["a"] * 10),
                                          ("num_classes", -3), ("in_chans", 7), ("net_chans", True)])
def test_every_key_of_a_hand_edited_model_json_is_checked(key, value, digits_run, tmp_path):
    import json
    import shutil

    from cnnarena.errors import UserError
    from cnnarena.models.artefacts import load_model

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    meta = json.loads((run / "model.json").read_text())
    meta["model"][key] = value
    (run / "model.json").write_text(json.dumps(meta, allow_nan=True))
    with pytest.raises(UserError, match=rf"corrupt model metadata .*model.json: {key} must be") as raised:
        load_model(run)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("key", "value", "says"), [("seed", "seven", "seed must be a whole number"),
                                                     ("lr", float("inf"), "lr "), ("epochs", [3], "epochs must be"),
                                                     ("optimizer", {"name": "sgd"}, "optimizer must be text")])
def test_every_key_of_a_hand_edited_config_yaml_is_checked(key, value, says, digits_run, tmp_path, monkeypatch, capsys):
    import shutil

    import yaml
    from cli_run import run_cli

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    (saved["train"] if key in saved["train"] else saved)[key] = value
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for argv in (["evaluate", str(run)], ["export", str(run), "--int8"]):
        code, _, err = run_cli(argv, monkeypatch, capsys)
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and "config.yaml" in lines[0] and says in lines[0], lines
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_metrics_from_another_version_are_read_or_refused_in_one_line(digits_run, tmp_path):
    import json
    import shutil

    from cnnarena import rundir
    from cnnarena.errors import UserError

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("seconds_per_epoch")  # an older version's file: derived
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert rundir.read_metrics(run)["seconds_per_epoch"] == pytest.approx(metrics["train_seconds"]
                                                                          / metrics["epochs_run"])
    metrics.pop("per_class")
    (run / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(UserError, match=r"metrics.json: 'per_class' is missing"):
        rundir.read_metrics(run)
    metrics["per_class"], metrics["test_accuracy"] = {}, "high"
    (run / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(UserError, match=r"'test_accuracy' is not float"):
        rundir.read_metrics(run)


def test_a_history_from_elsewhere_is_one_line_naming_the_line(digits_run, tmp_path):
    import shutil

    from cnnarena import rundir
    from cnnarena.errors import UserError

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    assert [r["epoch"] for r in rundir.read_history(run)] == [1, 2, 3]
    lines = (run / "history.jsonl").read_text().splitlines()
    (run / "history.jsonl").write_text("\n".join([lines[0], '{"epoch": 2, "loss": "low"}', *lines[2:]]) + "\n")
    with pytest.raises(UserError, match=r"history.jsonl: line 2 has no number for 'epoch_seconds'"):
        rundir.read_history(run)
    (run / "history.jsonl").write_text("[" * 100_000 + "\n")
    with pytest.raises(UserError, match="line 1 is not JSON"):
        rundir.read_history(run)
