"""`--format openvino`: the IR is checked against PyTorch, scored on the test split beside ONNX Runtime, timed, and
its card's Python lines run as a user would paste them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import cnnarena

pytest.importorskip("openvino")

pytestmark = pytest.mark.slow  # an export, timed


def test_the_openvino_export_is_checked_timed_and_runs_from_its_card(digits_run, tmp_path):
    from sklearn.datasets import load_digits

    xml = cnnarena.load(digits_run).export(format="openvino", output=tmp_path / "ov" / "model.xml", timing=0.2)
    assert xml.exists() and xml.with_suffix(".bin").stat().st_size > 1000
    card = json.loads((xml.parent / "model.xml.card.json").read_text())
    assert card["export_format"] == "openvino" and max(card["check"]["max_abs_diff"].values()) < 1e-4
    accuracy = card["accuracy"]
    assert abs(accuracy["openvino"] - accuracy["onnxruntime"]) <= 1 / accuracy["test_images"]
    assert accuracy["openvino"] == pytest.approx(cnnarena.load(digits_run).metrics["test_accuracy"], abs=0.01)
    assert all(card["images_per_second"][runtime][b] > 0 for runtime in ("openvino", "onnxruntime")
               for b in ("1", "64"))
    image = tmp_path / "digit.png"
    Image.fromarray((load_digits().images[23] * 255 / 16).astype(np.uint8)).save(image)
    code = card["usage"]["python"].replace('"image.jpg"', repr(str(image)))
    done = subprocess.run([sys.executable, "-c", code], cwd=xml.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].rsplit(" ", 1)[0] == cnnarena.load(digits_run).predict(image)["label"][0]


def test_a_wrong_file_name_is_one_line_and_writes_nothing(digits_run, tmp_path):
    done = subprocess.run([sys.executable, "-m", "cnnarena.cli", "export", str(digits_run), "--format", "openvino",
                           "--output", str(tmp_path / "model.onnx")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--output must end in .xml" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
