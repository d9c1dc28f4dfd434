"""Hostile and careless inputs: exploding YAML, wrong types, two writers, full and read-only disks, failed starts.
Each ends in one `error:` line and a non-zero exit, and nothing already written is lost."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from cli_run import run_cli

LEVELS = "abcdefghi"  # each level lists the one before 9 times: 9^9 values once expanded
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip(LEVELS, LEVELS[1:], strict=False))
ROOT = os.geteuid() == 0 and shutil.which("mount") is not None


def _one_error_line(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    for needle in needles:
        assert needle in last, last
    assert len(last) < 400  # no value echoed without bound
    return last


@pytest.mark.parametrize("where", ["--model", "--config", "--class-map", "study --config", "--class-weights"])
def test_an_exponential_yaml_is_refused_quickly_wherever_it_is_given(where, tmp_path, monkeypatch, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)  # 9^9 = 387 million values once expanded, 600 bytes on disk
    argv = {"--model": ["train", "digits", "--model", str(bomb)],
            "--config": ["train", "digits", "--config", str(bomb)],
            "--class-map": ["inspect", str(tmp_path), "--class-map", str(bomb)],
            "study --config": ["study", "--config", str(bomb)],
            "--class-weights": ["train", "digits", "--class-weights", str(bomb), "--epochs", "1"]}[where]
    if where == "--class-map":
        for c in "ab":
            (tmp_path / c).mkdir()
    t0 = time.perf_counter()
    code, _, err = run_cli(argv, monkeypatch, capsys)
    _one_error_line(code, err, str(bomb))
    assert "alias" in err or "expands to more than" in err
    assert time.perf_counter() - t0 < 20


def test_deep_nesting_and_huge_files_are_refused(tmp_path, monkeypatch, capsys):
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 5000 + "]" * 5000)
    code, _, err = run_cli(["train", "digits", "--model", str(deep)], monkeypatch, capsys)
    _one_error_line(code, err, "nests deeper than")
    huge = tmp_path / "huge.yaml"
    huge.write_text("# padding\n" * 200_000)
    code, _, err = run_cli(["train", "digits", "--config", str(huge)], monkeypatch, capsys)
    _one_error_line(code, err, "MB: more than the 1 MB")


@pytest.mark.parametrize(("text", "message"), [
    ("epochs: ten\n", "epochs must be a whole number, got the text 'ten'"),
    ("model: {name: fast}\n", "model must be text, got a mapping"),
    ("lr: [0.1]\n", "lr must be a number, got a list"),
    ("head_hidden: 5\n", "head_hidden must be a list of whole numbers, got the number 5"),
    ("batch_size: true\n", "batch_size must be a whole number, got true/false"),
    ("train: {weight_decay: lots}\n", "weight_decay must be a number, got the text 'lots'"),
])
def test_wrong_types_in_a_config_name_the_key_and_the_file(text, message, tmp_path, monkeypatch, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    code, _, err = run_cli(["train", "digits", "--config", str(config)], monkeypatch, capsys)
    last = _one_error_line(code, err, f"config file {config}")
    assert message.split(", got")[0] in last and (", got" not in message or message.split(", got")[1] in last)


def test_wrong_types_in_a_study_config_name_the_model_and_the_key(tmp_path, monkeypatch, capsys):
    config = tmp_path / "study.yaml"
    config.write_text("data: digits\nmodels:\n  - simple-2conv: {epochs: many}\n")
    code, _, err = run_cli(["study", "--config", str(config)], monkeypatch, capsys)
    _one_error_line(code, err, f"study config {config}, model simple-2conv: epochs must be a whole number")
    config.write_text("data: digits\nfractions: 0.5\n")
    code, _, err = run_cli(["study", "--config", str(config)], monkeypatch, capsys)
    _one_error_line(code, err, "fractions must be a list of numbers, got the number 0.5")


def test_a_failed_start_does_not_block_the_corrected_command(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(b"not a weights file")
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "digits", "--model", "efficientnet_lite0", "--weights", str(bad),
                            "--out", str(out)], monkeypatch, capsys)
    _one_error_line(code, err)
    assert not out.exists()  # a failed start leaves no run directory behind (issue 31)
    code, _, err = run_cli(["train", "digits", "--model", "simple-2conv", "--epochs", "1", "--out", str(out)],
                           monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["model"] == "simple-2conv"


def _cli(*args):
    return [sys.executable, "-m", "cnnarena", *args]


@pytest.mark.slow  # real processes
def test_two_writers_one_run_directory(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    train = ["train", "digits", "--model", "simple-2conv", "--budget", "8s", "--out", str(out)]
    first = subprocess.Popen(_cli(*train), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (out / "checkpoints" / "trainer_state.pt").exists():  # an epoch to resume from
            assert time.time() < deadline and first.poll() is None, first.stderr.read() if first.poll() else ""
            time.sleep(0.1)
        # the second writer is this test's own process: another process than the first, as a second command is
        code, _, err = run_cli(["train", "digits", "--model", "simple-2conv", "--out", str(out)], monkeypatch, capsys)
        last = _one_error_line(code, err, f"is being written by cnnarena process {first.pid}")
        assert "one run has one writer" in last
        first.send_signal(signal.SIGKILL)  # its lock dies with it
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    code, _, err = run_cli(train, monkeypatch, capsys)
    assert code == 0, err
    assert "resuming" in err  # the killed run's epochs were kept


def _mount_or_skip(command):
    """Root in a container without CAP_SYS_ADMIN cannot mount: that part truly cannot be had there."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({' '.join(command[:3])}): {done.stderr.strip()[:200]}")


@pytest.fixture
def small_tmpfs(tmp_path):
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root (make test runs as root in CI)")
    mount = tmp_path / "disk"
    mount.mkdir()
    _mount_or_skip(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)])
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow  # trains twice
def test_a_full_disk_is_one_error_and_the_run_resumes_once_there_is_space(small_tmpfs, monkeypatch, capsys):
    out = small_tmpfs / "run"
    argv = ["train", "digits", "--model", "simple-2conv", "--epochs", "3", "--out", str(out)]
    code, _, err = run_cli(argv, monkeypatch, capsys)  # its checkpoints cannot fit in 1 MB
    _one_error_line(code, err, "No space left on device", "rerunning the same command resumes")
    assert json.loads((out / "split.json").read_text())["sizes"]  # what was written is whole
    assert not list(out.rglob(".*.safetensors.*")), "a half-written temporary file was left behind"
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_tmpfs)], check=True)
    code, _, err = run_cli(argv, monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 3


@pytest.mark.slow  # trains once
def test_a_read_only_run_directory_is_one_error_and_stays_as_it_was(tmp_path, monkeypatch, capsys):
    if not ROOT:
        pytest.skip("a read-only bind mount needs root (make test runs as root in CI)")
    out = tmp_path / "run"
    argv = ["train", "digits", "--model", "simple-2conv", "--epochs", "1", "--out", str(out)]
    assert run_cli(argv, monkeypatch, capsys)[0] == 0
    (out / "metrics.json").unlink()  # as if evaluation had not happened yet: the run wants to write
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _mount_or_skip(["mount", "--bind", str(out), str(out)])
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(out)], check=True)
        code, _, err = run_cli(argv, monkeypatch, capsys)
        _one_error_line(code, err, "Read-only file system")
    finally:
        subprocess.run(["umount", "-l", str(out)], check=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_spec_too_large_for_memory_is_refused_before_any_allocation(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "huge.yaml"
    spec.write_text("- conv: {filters: 64}\n- flatten\n- dense: {units: 40000000}\n")  # 2 trillion parameters
    code, _, err = run_cli(["train", "digits", "--model", str(spec)], monkeypatch, capsys)
    _one_error_line(code, err, "parameters: about", "GB to train", "use fewer filters or units")
    spec.write_text("- conv: {filters: 3000000}\n")  # 28x28x3M floats: 9 GB for one image's output
    code, _, err = run_cli(["summary", str(spec), "--input", "1x28x28"], monkeypatch, capsys)
    _one_error_line(code, err, "cannot train at any batch size")


@pytest.mark.slow  # a real allocation failure in a process with little address space
def test_an_allocation_failure_during_training_is_one_error_line(tmp_path):
    import resource

    def little_memory():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    out = subprocess.run(_cli("train", "digits", "--model", "efficientnet_lite0", "--input-size", "640",
                              "--batch-size", "64", "--freeze-epochs", "0", "--epochs", "1", "--max-memory", "none",
                              "--no-pretrained", "--out", str(tmp_path / "run")),
                         capture_output=True, text=True, timeout=600, preexec_fn=little_memory,
                         env={**os.environ, "CNNARENA_FUSED_KERNELS": "0"})
    _one_error_line(out.returncode, out.stderr, "out of memory", "rerunning resumes")
