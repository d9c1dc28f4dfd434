"""The CLI end to end: every mistake a user can make is one `error:` line and exit code 2."""

import subprocess
import sys

import pytest
from cli_run import run_cli


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "bad_config.yaml").write_text("epochs: 2\nwobble: 3\n")
    (tmp_path / "bad_spec.yaml").write_text("layers:\n  - conv: 8\n  - sparkle\n")
    (tmp_path / "split.json").write_text("{not json")
    (tmp_path / "not_a_run").mkdir()
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["train", "no/such/folder"], "unknown dataset"),
    (["train", "digits", "--model", "resnet9000", "--out", "{tmp}/run"], "unknown model"),
    (["train", "digits", "--augment", "sparkle"], "unknown augmentation"),
    (["train", "digits", "--epochs", "0"], "--epochs must be at least 1"),
    (["train", "digits", "--optimizer", "rmsprop"], "unknown optimizer"),
    (["train", "digits", "--config", "{tmp}/bad_config.yaml"], "unknown config key 'wobble'"),
    (["train", "digits", "--config", "{tmp}/missing.yaml"], "config file not found"),
    (["train", "digits", "--model", "{tmp}/bad_spec.yaml", "--out", "{tmp}/run"], "unknown layer 'sparkle'"),
    (["train", "digits", "--split", "{tmp}/split.json", "--out", "{tmp}/run"], "not a cnnarena split manifest"),
    (["train", "digits", "--fraction", "1.5"], "--fraction must be in"),
    (["train", "digits", "--head-hidden", "a,b"], "comma-separated whole numbers"),
    (["evaluate", "{tmp}/not_a_run"], "not a cnnarena run directory"),
    (["summary", "simple-2conv", "--input", "28x28"], "--input must look like"),
    (["inspect", "{tmp}/nothing_here"], "unknown dataset"),
    (["study", "digits", "--models", "simple-2conv,nope_net"], "unknown model 'nope_net'"),
    (["study", "digits", "--lrs", "1e-3,fast"], "comma-separated numbers"),
    (["study", "digits", "--fractions", "0,1"], "--fractions must be in"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, bad_files, monkeypatch, capsys):
    argv = [a.replace("{tmp}", str(bad_files)) for a in argv]
    code, _, err = run_cli(argv, monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]


def test_a_misspelt_model_is_refused_before_the_images_are_decoded(tmp_path, monkeypatch, capsys):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(20):
            Image.new("RGB", (16, 16), (i * 10, 0, 0)).save(tmp_path / "photos" / label / f"{i}.png")
    monkeypatch.setenv("CNNARENA_CACHE", str(tmp_path / "cache"))
    for model, message in {"simple-2cnv": "unknown model 'simple-2cnv'",
                           str(tmp_path / "missing-spec.yaml"): "model spec not found"}.items():
        code, _, err = run_cli(["train", str(tmp_path / "photos"), "--model", model, "--out", str(tmp_path / "run")],
                               monkeypatch, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
        assert not list((tmp_path / "cache").rglob("*.*")) and not (tmp_path / "run").exists()  # nothing decoded


@pytest.mark.slow  # a CLI subprocess
def test_real_process_exit_code_and_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cnnarena.cli", "train", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr


def test_summary_prints_keras_style_table(monkeypatch, capsys):
    code, out, _ = run_cli(["summary", "simple-2conv", "--input", "1x28x28"], monkeypatch, capsys)
    assert code == 0
    assert "Trainable params: 429,450" in out and "Output Shape" in out


@pytest.mark.slow  # ~3.5 s: trains 3 epochs
def test_train_then_evaluate_via_cli(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    code, out, _ = run_cli(["train", "digits", "--epochs", "3", "--batch-size", "32", "--out", str(run)],
                           monkeypatch, capsys)
    assert code == 0 and "macro avg" in out and "test accuracy" in out
    code, out, _ = run_cli(["evaluate", str(run)], monkeypatch, capsys)
    assert code == 0
    trained = float(out.split("test accuracy ")[1].split()[0])
    assert trained > 0.85
    assert (run / "evaluation.json").exists()


@pytest.mark.parametrize("command", ["train", "evaluate", "inspect", "summary", "study", "lr-find"])
def test_every_command_has_help_with_an_example(command, monkeypatch, capsys):
    code, out, _ = run_cli([command, "--help"], monkeypatch, capsys)
    assert code == 0 and "Example" in out
