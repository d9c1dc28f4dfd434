"""Mistakes click, uvicorn, matplotlib or torch used to report in their own way (Rich boxes, tracebacks, log
lines, exit codes 1 and 3, graph dumps): each is now one `error: ...` line on stderr and exit code 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from cli_run import run_cli
from PIL import Image

from cnnarena import __version__

CLI = [sys.executable, "-m", "cnnarena.cli"]


def assert_one_error_line(code, err, message):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0] and "Traceback" not in err


@pytest.fixture
def files(tmp_path):
    (tmp_path / "afile.txt").write_text("not a directory\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "negative_conv.yaml").write_text("layers:\n  - conv: -5\n")
    (tmp_path / "big_dropout.yaml").write_text("layers:\n  - conv: 8\n  - flatten\n  - dropout: 3\n")
    (tmp_path / "text_units.yaml").write_text("layers:\n  - flatten\n  - dense: many\n")
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    # click's own usage errors (were Rich boxes)
    (["trian"], "no such command 'trian'"),
    (["train", "digits", "--bogus", "1"], "no such option: --bogus (see `cnnarena train --help`)"),
    (["train", "digits", "--optimiser", "sgd"], "no such option: --optimiser (did you mean --optimizer?)"),
    (["train"], "missing argument 'data'"),
    (["summary", "fast", "--classes", "ten"], "invalid value for '--classes'"),
    # --out naming a file (NotADirectoryError, FileExistsError, matplotlib's ValueError)
    (["train", "digits", "--model", "fast", "--epochs", "1", "--out", "{tmp}/afile.txt"], "is a file, not a directory"),
    (["train", "digits", "--epochs", "1", "--out", "{tmp}/afile.txt/run"], "afile.txt is a file, not a directory"),
    (["study", "digits", "--models", "fast", "--epochs", "1", "--out", "{tmp}/afile.txt"], "is a file, not a dir"),
    (["inspect", "digits", "--out", "{tmp}/afile.txt"], "is a file, not a directory"),
    (["lr-find", "digits", "--steps", "5", "--out", "{tmp}/afile.txt"], "cannot write a plot as '.txt'"),
    (["lr-find", "digits", "--steps", "5", "--out", "{tmp}/adir"], "is a directory"),
    # lr-find's range (IndexError, a torch error, a meaningless suggestion)
    (["lr-find", "digits", "--steps", "0"], "--steps must be at least 5"),
    (["lr-find", "digits", "--steps", "5", "--start-lr", "-1"], "--start-lr must be a positive number"),
    (["lr-find", "digits", "--steps", "5", "--start-lr", "1", "--end-lr", "0.1"], "must be below --end-lr"),
    # summary's input and layer specs (ValueError, RuntimeError, an 800 GB allocation)
    (["summary", "fast", "--input", "2x28x28"], "channels must be 1 (grayscale) or 3 (RGB)"),
    (["summary", "fast", "--input", "0x28x28"], "channels must be 1 (grayscale) or 3 (RGB)"),
    (["summary", "fast", "--classes", "-3"], "--classes must be 1 to"),
    (["summary", "fast", "--classes", "0"], "--classes must be 1 to"),
    (["summary", "fast", "--input", "3x100000x100000"], "height and width must be 1 to 4096"),
    (["summary", "{tmp}/negative_conv.yaml"], "filters must be a whole number of at least 1, got -5"),
    (["summary", "{tmp}/big_dropout.yaml"], "rate must be a number from 0 to below 1, got 3"),
    (["summary", "{tmp}/text_units.yaml"], "units must be a whole number of at least 1, got 'many'"),
])
def test_mistakes_are_one_error_line(argv, message, files, monkeypatch, capsys):
    argv = [a.replace("{tmp}", str(files)) for a in argv]
    code, _, err = run_cli(argv, monkeypatch, capsys)
    assert_one_error_line(code, err, message)


def test_help_shows_bracketed_defaults_and_version(monkeypatch, capsys):
    code, out, _ = run_cli(["train", "--help"], monkeypatch, capsys)
    assert code == 0
    for default in ("[adam;", "[auto]", "[on]", "[runs/DATA-MODEL-TIME]", "[128;"):
        assert default in out, default
    from cnnarena.models.recipes import recipe_for

    # what will run for the recipes that override the defaults, not only the defaults
    assert f"fast, fast-large: {recipe_for('fast')['batch_size']}" in " ".join(out.split())
    code, out, _ = run_cli(["study", "--help"], monkeypatch, capsys)
    assert code == 0 and "[simple-2conv,fast,efficientnet_lite0]" in out
    assert "[default study: studies/default; with your DATA: studies/DATA-NAME]" in " ".join(out.split())
    assert "cnnarena study fashion-mnist --models simple-2conv,fast,efficientnet_lite0" in out  # not rewrapped
    code, out, _ = run_cli(["--version"], monkeypatch, capsys)
    assert code == 0 and out.strip() == f"cnnarena {__version__}"
    code, out, _ = run_cli([], monkeypatch, capsys)
    assert code == 0 and "Commands:" in out


def test_lr_find_prints_the_plot_it_wrote(tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(["lr-find", "digits", "--steps", "5", "--out", str(tmp_path / "x" / "lrf")],
                           monkeypatch, capsys)
    assert code == 0 and (tmp_path / "x" / "lrf.png").exists()
    assert f"plot: {tmp_path / 'x' / 'lrf.png'}" in out


def test_predict_output_and_unreadable_inputs(digits_run, files, monkeypatch, capsys):
    code, _, err = run_cli(["predict", str(digits_run), str(files / "afile.txt"), "-o", str(files / "adir")],
                           monkeypatch, capsys)
    assert_one_error_line(code, err, "--output")
    code, out, err = run_cli(["predict", str(digits_run), str(files / "nothere.png")], monkeypatch, capsys)
    assert_one_error_line(code, err, "nothere.png could not be read (missing)")
    assert out == ""
    Image.new("L", (8, 8), 128).save(files / "gray.png")
    code, _, err = run_cli(["predict", str(digits_run), str(files / "gray.png"), str(files / "nothere.png"),
                            "-o", str(files / "preds.txt")], monkeypatch, capsys)
    assert code == 0
    assert "wrote 1 predictions" in err and "1 of 2 files could not be read: " in err


@pytest.mark.slow  # five CLI subprocesses
def test_real_processes_serve_export_and_usage(digits_run, tmp_path):
    """In parallel: what only a real process shows (uvicorn's exit 3, the exporter's stdout, Rich's box)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = str(taken.getsockname()[1])
    run = str(digits_run)
    cases = {
        "unknown --log-level 'loud'": ["serve", run, "--log-level", "loud"],
        "address already in use": ["serve", run, "--port", port],
        "'999.1.1.1' is not a valid address": ["serve", run, "--host", "999.1.1.1", "--port", port],
        "--opset 99 is not supported": ["export", run, "--opset", "99", "--output", str(tmp_path / "m.onnx")],
        "invalid value for '--top-k' / '-k'": ["predict", run, "x.png", "-k", "0"],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        procs = {want: subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True) for want, args in cases.items()}
        for want, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            assert_one_error_line(proc.returncode, err, want)
            assert out == "", (want, out[:500])  # e.g. no TorchScript graph dumped before the error
    finally:
        taken.close()


@pytest.mark.slow  # a training subprocess
def test_ctrl_c_during_training_says_how_to_resume(tmp_path):
    cmd = [*CLI, "train", "digits", "--model", "fast", "--epochs", "500", "--fraction", "0.2",
           "--out", str(tmp_path / "run")]
    # Ctrl-C at a terminal reaches a process that handles SIGINT; a job a script started in the background
    # inherits SIGINT ignored (then Python raises no KeyboardInterrupt), so the child starts with the default
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # one line per epoch when stderr is not a terminal
            if line.lstrip("\r").startswith("epoch") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == ("interrupted: the run directory keeps the last finished epoch; "
                                            "rerun the same command to resume")
    assert "Traceback" not in err
