"""The public API: cnnarena.train / study / load / doctor / models and the Run, Study and DataReport they return."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import cnnarena
from cnnarena import rundir, schema
from cnnarena.config import RunConfig
from cnnarena.errors import UserError
from cnnarena.study.config import StudyConfig
from cnnarena.train.config import TrainConfig


def test_import_cnnarena_loads_no_torch_and_names_the_api():
    code = ("import sys, cnnarena; assert 'torch' not in sys.modules, 'torch imported'; "
            "print(sorted(n for n in cnnarena.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    for name in ("train", "study", "load", "doctor", "models", "Run", "Study", "DataReport"):
        assert name in out


@pytest.mark.slow  # a training process
def test_training_a_custom_cnn_never_imports_timm_pyplot_nor_dynamo(tmp_path):
    """timm (and through it torchvision's detection models) costs ~3 s of start-up: only a backbone needs it.
    torch._dynamo costs 1.1-1.9 s, and torch.optim imports it unless the optimiser is train/eager_optim's.
    pyplot would switch a notebook's matplotlib backend: the run's figures are drawn on bare Figures."""
    code = ("import sys, matplotlib; before = matplotlib.rcParams._get_backend_or_none(); import cnnarena; "
            "run = cnnarena.train('digits', model='simple-2conv', epochs=1, out=sys.argv[1]); "
            "assert 'timm' not in sys.modules, 'timm imported'; "
            "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'; "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
            "assert matplotlib.rcParams._get_backend_or_none() == before, 'backend changed'; "
            "assert (run.path / 'plots' / 'confusion_matrix.png').stat().st_size > 1000")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_verbs_stay_callable_after_their_subpackages_are_imported():
    import cnnarena.models.custom  # noqa: F401 - sets the package attributes, as a training does
    import cnnarena.study.runner  # noqa: F401
    import cnnarena.train.loop  # noqa: F401

    for verb in (cnnarena.train, cnnarena.study, cnnarena.models):
        assert callable(verb)
    import inspect

    assert list(inspect.signature(cnnarena.train).parameters)[:3] == ["data", "model", "out"]
    assert "fast" in cnnarena.api.train.__doc__
    assert inspect.signature(cnnarena.train).parameters["model"].default is None


@pytest.mark.parametrize("call, bad, close", [
    (lambda: cnnarena.train("digits", epoch=3), "epoch", "epochs"),
    (lambda: cnnarena.train("digits", batchsize=3), "batchsize", "batch_size"),
    (lambda: cnnarena.study("digits", budget_per_modle="1m"), "budget_per_modle", "budget_per_model"),
])
def test_an_unknown_option_is_a_type_error_naming_the_close_match(call, bad, close, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{bad}' \(did you mean '{close}'\?\)"):
        call()
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_every_config_field_is_declared_once_in_the_schema():
    run_fields = {f.name for f in dataclasses.fields(RunConfig)} - {"train", "data"}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert run_fields | train_fields == set(schema.RUN)
    assert train_fields == set(schema.TRAIN_FIELDS)
    defaults = schema.defaults(schema.RUN)
    for f in [*dataclasses.fields(RunConfig), *dataclasses.fields(TrainConfig)]:
        if f.name in defaults and f.default is not dataclasses.MISSING:
            assert f.default == defaults[f.name], f.name
    assert StudyConfig().fractions == schema.STUDY["fractions"].default
    from cnnarena.cli import app

    shown = {p.name for p in app.commands["train"].params}
    assert shown == {"data"} | {n for n, o in schema.RUN.items() if not o.hidden} | set(schema.RUN_ONLY)


def test_rundir_tells_every_state(tmp_path, digits_run):
    assert rundir.state(tmp_path / "missing") is rundir.State.NEW
    (tmp_path / "empty").mkdir()
    assert rundir.state(tmp_path / "empty") is rundir.State.NEW
    assert rundir.state(digits_run) is rundir.State.FINISHED
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "metrics.json").write_text('{"accuracy": 1}')  # not a run of ours, whatever its file names
    assert rundir.state(foreign) is rundir.State.FOREIGN
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.yaml").write_text((digits_run / "config.yaml").read_text())
    assert rundir.state(partial) is rundir.State.PARTIAL


def test_out_never_touches_a_folder_that_is_not_ours(tmp_path, monkeypatch, capsys):
    from cli_run import run_cli

    mine = tmp_path / "thesis"
    (mine / "plots").mkdir(parents=True)
    files = {mine / "config.yaml": "my: settings\n", mine / "notes.txt": "draft\n",
             mine / "plots" / "curves.png": "not really a png"}
    for path, text in files.items():
        path.write_text(text)
    for argv in (["train", "digits", "--epochs", "1", "--out", str(mine)],
                 ["study", "digits", "--models", "simple-2conv", "--out", str(mine)]):
        code, _, err = run_cli(argv, monkeypatch, capsys)
        assert code == 2 and err.count("\n") == 1 and "files that are not a cnnarena" in err, err
    assert {p: p.read_text() for p in files} == files and sorted(p.name for p in mine.iterdir()) == [
        "config.yaml", "notes.txt", "plots"]
    for target in ("/", str(cnnarena.api.Path.home())):
        with pytest.raises(UserError, match="refusing to write a run into"):
            rundir.check_out(target, "run")


def test_a_failed_start_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    from cli_run import run_cli

    spec = tmp_path / "bad.yaml"
    spec.write_text("layers:\n  - conv: 8\n  - sparkle\n")
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "digits", "--model", str(spec), "--epochs", "1", "--out", str(run)],
                           monkeypatch, capsys)
    assert code == 2 and "unknown layer 'sparkle'" in err
    assert not run.exists()


def test_load_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        cnnarena.load(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="not a cnnarena run or study directory"):
        cnnarena.load(tmp_path)


def test_a_finished_run_as_a_run(digits_run, tmp_path):
    run = cnnarena.load(digits_run)
    assert isinstance(run, cnnarena.Run) and run.state is rundir.State.FINISHED
    assert run.metrics["test_accuracy"] > 0.5 and run.config["data"] == "digits"
    history = run.history
    assert list(history["epoch"]) == [1, 2, 3] and {"val_accuracy", "train_loss"} <= set(history.columns)
    from sklearn.datasets import load_digits

    digits = load_digits()
    arrays = [(digits.images[i] * 255 / 16).astype(np.uint8) for i in range(4)]
    Image.fromarray(arrays[0]).save(tmp_path / "zero.png")
    frame = run.predict([*arrays, tmp_path / "zero.png", tmp_path / "missing.png"], top_k=2)
    assert list(frame["image"][:4]) == ["image-0", "image-1", "image-2", "image-3"]
    assert frame["label"][0] == frame["label"][4]  # an array and its PNG are decoded alike
    assert all(len(top) == 2 for top in frame["top_k"][:5]) and frame["error"][5] == "missing"
    assert sum(frame["label"][:4] == ["0", "1", "2", "3"]) >= 3
    again = run.evaluate()
    assert again["test_accuracy"] == pytest.approx(run.metrics["test_accuracy"])
    html = run._repr_html_()
    assert "data:image/png;base64," in html and "test accuracy" in html and "<script" not in html


def test_a_run_shows_class_names_escaped(tmp_path):
    """A class folder named like markup is shown as text in the notebook display, never run."""
    photos = _hostile_folder(tmp_path / "photos")
    run = cnnarena.train(photos, model="simple-2conv", epochs=1, image_size=16, out=tmp_path / "run")
    html = run._repr_html_()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html


@pytest.mark.slow  # two trainings and a study report
def test_the_api_and_the_command_line_train_the_same_run(tmp_path, monkeypatch, capsys):
    from cli_run import run_cli

    run = cnnarena.train("digits", model="fast", epochs=1, out=tmp_path / "api")
    code, out, _ = run_cli(["train", "digits", "--model", "fast", "--epochs", "1", "--out", str(tmp_path / "cli")],
                           monkeypatch, capsys)
    assert code == 0 and out.startswith(f"cnnarena train: fast on digits -> {tmp_path / 'cli'}\n")
    api_cfg, cli_cfg = run.config, cnnarena.load(tmp_path / "cli").config
    api_cfg.pop("out"), cli_cfg.pop("out")
    assert api_cfg == cli_cfg and api_cfg["train"]["optimizer"] == "sgd"  # fast's recipe, not the bare defaults


def _hostile_folder(root, per_class: int = 24, side: int = 16):
    """Two classes of noisy gray squares, one of them named like markup."""
    rng = np.random.default_rng(0)
    for name, tone in ((HOSTILE, 40), ("plain", 200)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(tone, 20, (side, side)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.mark.slow  # a two-model study
def test_a_study_as_a_study(tmp_path):
    photos = _hostile_folder(tmp_path / "photos", per_class=40)
    renames = tmp_path / "classes.yaml"  # a class renamed to markup, as --class-map allows
    renames.write_text('plain: "</title><script>alert(2)</script>"\n')
    study = cnnarena.study(photos, models=["simple-2conv", "fast"], epochs=1, image_size=16, measure_seconds=0.2,
                           out=tmp_path / "study", class_map=renames)
    assert isinstance(study, cnnarena.Study) and study.finished
    table = study.table
    assert list(table["model"]) == [row["model"] for row in study.comparison["table"]]
    assert study.winner.path == cnnarena.api.Path(table["run_dir"][0]) and study.winner.metrics["test_accuracy"] > 0
    assert study.verdict.startswith("Only training a custom CNN from scratch was compared: ")  # the answer
    assert study.findings[0].startswith("Most accurate:") and "Optimizer" in study.methods["fast"]
    assert study.report_path.is_file() and set(study.runs) == {"simple-2conv", "fast"}
    html = study._repr_html_()
    assert "Only training a custom CNN" in html and "data:image/png;base64," in html
    again = cnnarena.load(tmp_path / "study")
    assert isinstance(again, cnnarena.Study) and again.winner.path == study.winner.path
    report = study.report_path.read_text()  # the file people share: a class name is text in it, never markup
    assert "&lt;img src=x onerror=alert(1)&gt;" in report and "<img src=x" not in report
    assert "&lt;/title&gt;&lt;script&gt;alert(2)" in report and "<script>alert(2)" not in report


@pytest.mark.slow  # a server process
def test_a_run_serves_from_python(digits_run):
    import httpx

    server = cnnarena.load(digits_run).serve(max_batch=4)
    try:
        health = httpx.get(server.url + "/v1/health", timeout=10).json()
        assert health["status"] == "ok" and health["batching"]["max_batch"] == 4
    finally:
        server.stop()
    with pytest.raises(TypeError, match="max_batches"):
        cnnarena.load(digits_run).serve(max_batches=4)


def test_the_doctor_as_a_data_report(tmp_path):
    report = cnnarena.doctor("digits", label_issues=False, out=tmp_path / "doctor")
    assert isinstance(report, cnnarena.DataReport) and report.path == tmp_path / "doctor"
    assert "1,797 images" in report.summary and report.serious == []
    assert "cnnarena doctor: digits" in report._repr_html_()


def test_models_is_a_table():
    frame = cnnarena.models()
    assert {"simple-2conv", "fast", "efficientnet_lite0", "resnet18"} <= set(frame["name"])
    assert set(frame["kind"]) == {"custom", "pretrained"}


def test_the_duplicate_search_is_cached_with_the_images(tmp_path, monkeypatch):
    """A second train or study on the same data reads the duplicate groups instead of searching again."""
    from cnnarena.data import duplicate_cache
    from cnnarena.data.health import check
    from cnnarena.data.sources import load_source

    monkeypatch.setenv("CNNARENA_CACHE", str(tmp_path / "cache"))
    source = load_source("digits")
    first = check(source)
    entries = list((tmp_path / "cache" / "images" / "duplicates").glob("*.json"))
    assert len(entries) == 1
    entries[0].write_text('{"groups": [[0, 1]], "exact": 7, "near": 0}')  # what only a read of the cache returns
    again = check(source)
    assert again.groups == [[0, 1]] and "7 exact" in again.summary and first.summary != again.summary
    other = source.pool.images.clone()
    other[0, 0, 0, 0] ^= 1  # one pixel changed: other data, another search
    assert duplicate_cache.fingerprint(other, False) != duplicate_cache.fingerprint(source.pool.images, False)


def test_missing_weights_are_reported_before_the_data_is_read(tmp_path, monkeypatch, capsys):
    from cli_run import run_cli

    monkeypatch.setenv("CNNARENA_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    for name in ("a", "b"):
        (photos / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), (i * 60, 90, 30)).save(photos / name / f"{i}.png")
    code, _, err = run_cli(["train", str(photos), "--model", "efficientnet_lite0", "--weights",
                            str(tmp_path / "nowhere.safetensors"), "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert code == 2 and "--weights" in err and "no such file" in err
    assert not (tmp_path / "cache" / "images").exists() and not (tmp_path / "run").exists()


def test_a_run_written_by_an_earlier_version_still_loads(tmp_path):
    """tests/data holds a digits run written by cnnarena 0.1.0 at commit 3f2268f, before the API existed."""
    import shutil
    from pathlib import Path

    old = tmp_path / "old-run"
    shutil.copytree(Path(__file__).parent / "data" / "run-0.1.0-3f2268f", old)
    run = cnnarena.load(old)
    assert run.state is rundir.State.FINISHED and run.metrics["model"] == "simple-2conv"
    assert run.evaluate()["test_accuracy"] == pytest.approx(run.metrics["test_accuracy"])
    from sklearn.datasets import load_digits

    frame = run.predict([(load_digits().images[0] * 255 / 16).astype(np.uint8)])
    assert frame["error"][0] is None and frame["label"][0] in run.metrics["per_class"]
    rundir.check_out(old, "run")  # ours: a rerun into it resumes or reuses it
