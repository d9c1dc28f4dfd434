"""The probes of hardening round 3 (issue 33) that other files do not already rebuild end to end: `--out` on `/`,
on the home folder and on a folder with a stray metrics.json; a doctor over a FIFO; a served model with a
hand-edited model.json; split files with an empty train list; class folders that link in a loop; the served model
card of a run trained on a folder; an empty Hugging Face split. Each ends in one line and a non-zero exit, or is
handled, and leaves what the user had as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_run import run_cli
from PIL import Image


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _photos(root: Path, per_class: int = 12, side: int = 24) -> Path:
    rng = np.random.default_rng(3)
    for name, tone in (("cats", 50), ("dogs", 200)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(tone, 30, (side, side, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _one_line_refusal(argv, monkeypatch, capsys, says: str) -> None:
    code, _, err = run_cli(argv, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and says in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("target", ["/", "~"])
def test_out_at_the_root_or_the_home_folder_is_refused_before_anything_is_read(target, monkeypatch, capsys):
    target = str(Path(target).expanduser())
    before = sorted(os.listdir(target))
    _one_line_refusal(["train", "digits", "--epochs", "1", "--out", target], monkeypatch, capsys,
                      "refusing to write a run into")
    assert sorted(os.listdir(target)) == before


def test_a_folder_with_a_stray_metrics_json_is_not_taken_for_a_run(tmp_path, monkeypatch, capsys):
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"accuracy": 0.9}')
    before = _digest(mine)
    _one_line_refusal(["train", "digits", "--epochs", "1", "--out", str(mine)], monkeypatch, capsys,
                      "not a cnnarena")
    _one_line_refusal(["evaluate", str(mine)], monkeypatch, capsys, str(mine))
    assert _digest(mine) == before and sorted(p.name for p in mine.iterdir()) == ["metrics.json"]


@pytest.mark.slow  # a child process, so that a regression hangs it and not the suite
def test_the_doctor_skips_a_fifo_in_a_class_folder(tmp_path):
    photos = _photos(tmp_path / "photos")
    os.mkfifo(photos / "cats" / "pipe.png")  # opened for reading, it would block forever
    before = _digest(photos)
    proc = subprocess.run([sys.executable, "-m", "cnnarena.cli", "doctor", str(photos), "--no-label-issues",
                           "--out", str(tmp_path / "doctor")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CNNARENA_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "24 images" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert _digest(photos) == before and (photos / "cats" / "pipe.png").exists()


@pytest.mark.slow  # a server process, which must not start
def test_serve_refuses_a_hand_edited_model_json_in_one_line(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    meta = json.loads((run / "model.json").read_text())
    meta["model"]["input_size"] = [0, 0]
    (run / "model.json").write_text(json.dumps(meta))
    before = _digest(run)
    proc = subprocess.run([sys.executable, "-m", "cnnarena.cli", "serve", str(run), "--port", "0", "--backend",
                           "torch"], capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "input_size" in lines[0], proc.stderr[-2000:]
    assert _digest(run) == before


@pytest.mark.parametrize(("split", "says"), [({"train": [], "val": ["a"], "test": ["b"]}, "train"),
                                             ({"train": [["x"]], "val": ["a"], "test": ["b"]}, "ids")])
def test_a_split_file_with_no_training_images_or_list_ids_is_one_line(split, says, tmp_path, monkeypatch, capsys):
    file = tmp_path / "split.json"
    file.write_text(json.dumps(split))
    _one_line_refusal(["train", "digits", "--epochs", "1", "--split", str(file), "--out", str(tmp_path / "run")],
                      monkeypatch, capsys, says)
    assert not (tmp_path / "run").exists()


def test_class_folders_that_link_in_a_loop_are_read_once_and_end(tmp_path):
    from cnnarena.data.sources import load_source

    photos = _photos(tmp_path / "photos")
    (photos / "cats" / "to-dogs").symlink_to(photos / "dogs", target_is_directory=True)
    (photos / "dogs" / "to-cats").symlink_to(photos / "cats", target_is_directory=True)
    (photos / "self").symlink_to(photos / "self")  # a class entry that links to itself
    before = _digest(photos)
    source = load_source(str(photos), cache_dir=tmp_path / "cache")
    assert source.classes == ["cats", "dogs"] and len(source.pool) == 24
    assert _digest(photos) == before


def test_the_served_card_of_a_run_trained_on_a_folder_names_no_path(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    import cnnarena
    from cnnarena.serve.app import create_app

    monkeypatch.setenv("CNNARENA_CACHE", str(tmp_path / "cache"))
    photos = _photos(tmp_path / "secret-place" / "photos")
    run = cnnarena.train(str(photos), model="simple-2conv", epochs=1, out=tmp_path / "run")
    with TestClient(create_app(run.path, max_files=2)) as client:
        card = client.get("/v1/model").text
    assert "secret-place" not in card and str(tmp_path) not in card and "photos" in card


def test_an_empty_hugging_face_split_is_one_line(tmp_path, monkeypatch, capsys):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    empty = datasets.Dataset.from_dict({"image": [], "label": []}, features=features)
    unlabelled = datasets.Dataset.from_dict({"image": [Image.new("L", (8, 8))] * 4, "label": [-1] * 4},
                                            features=features)
    for name, train in (("empty", empty), ("unlabelled", unlabelled)):
        path = tmp_path / name
        datasets.DatasetDict({"train": train}).save_to_disk(str(path))
        capsys.readouterr()  # datasets' own progress bars
        code, _, err = run_cli(["doctor", str(path), "--no-label-issues", "--out", str(tmp_path / f"d-{name}")],
                               monkeypatch, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err and "no" in lines[0], (name, err)
