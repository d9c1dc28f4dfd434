"""`--format tflite` (float and int8) and `--format coreml`: each checked against the trained model, scored and timed
where its runtime runs here, and its card's Python lines run as a user would paste them (Core ML's only on macOS: its
spec is checked, read back from the file)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import cnnarena

pytest.importorskip("litert_torch")
pytest.importorskip("coremltools")

pytestmark = pytest.mark.slow  # conversions, timed


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    from sklearn.datasets import load_digits

    path = tmp_path_factory.mktemp("digit") / "digit.png"
    Image.fromarray((load_digits().images[23] * 255 / 16).astype(np.uint8)).save(path)
    return path


def _run_snippet(card: dict, folder, image) -> str:
    code = card["usage"]["python"].replace('"image.jpg"', repr(str(image)))
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[0].rsplit(" ", 1)[0]


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_the_tflite_export_is_checked_scored_timed_and_runs_from_its_card(digits_run, tmp_path, digit_png, int8):
    run = cnnarena.load(digits_run)
    name = "model.int8.tflite" if int8 else "model.tflite"
    run.export(format="tflite", int8=int8, output=tmp_path / name, timing=0.2)
    card = json.loads((tmp_path / f"{name}.card.json").read_text())
    assert card["export_format"] == "tflite" and card["precision"] == ("int8" if int8 else "float32")
    assert card["batch"] == 1 and card["input"]["shape"][0] == 1
    assert max(card["check"]["max_abs_diff"].values()) < 1e-4
    accuracy = card["accuracy"]
    assert accuracy["float"] == pytest.approx(run.metrics["test_accuracy"], abs=0.01)
    if int8:
        assert accuracy["drop_points"] <= accuracy["max_drop_points"] == 1.0
    assert all(rate > 0 for rates in card["images_per_second"].values() for rate in rates.values())
    assert set(card["images_per_second"]) == ({"float", "int8"} if int8 else {"float"})
    label = _run_snippet(card, tmp_path, digit_png)
    if int8:
        assert label in card["classes"]
    else:
        assert label == run.predict(digit_png)["label"][0]


def test_the_int8_tflite_file_is_smaller_and_takes_int8(digits_run, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    run = cnnarena.load(digits_run)
    floats = run.export(format="tflite", output=tmp_path / "model.tflite", timing=0.1)
    ints = run.export(format="tflite", int8=True, output=tmp_path / "model.int8.tflite", timing=0.1)
    assert ints.stat().st_size < 0.5 * floats.stat().st_size
    assert Interpreter(model_path=str(ints)).get_input_details()[0]["dtype"] == np.int8


def test_the_coreml_export_is_a_classifier_with_the_runs_classes_and_says_it_was_not_run(digits_run, tmp_path):
    import coremltools as ct

    path = cnnarena.load(digits_run).export(format="coreml", output=tmp_path / "model.mlpackage")
    assert path.is_dir() and (path / "Manifest.json").is_file()
    card = json.loads((tmp_path / "model.mlpackage.card.json").read_text())
    check = card["check"]
    assert check["spec_checked"] and check["run"] is False and "macOS" in check["why_not_run"]
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()  # read back from the file
    (image,) = spec.description.input
    assert image.type.WhichOneof("Type") == "imageType" and image.type.imageType.width == card["input"]["size"][1]
    assert spec.description.predictedFeatureName == "classLabel"
    main = spec.mlProgram.functions["main"]
    ops = main.block_specializations[main.opset].operations
    (classify,) = [op for op in ops if op.type == "classify"]
    labels = [v.immediateValue.tensor.strings.values[0]
              for v in classify.inputs["classes"].arguments[0].value.immediateValue.list.values]
    assert labels == card["classes"] == cnnarena.load(digits_run).classes


@pytest.mark.parametrize(("fmt", "name", "says"), [("tflite", "model.onnx", "must end in .tflite"),
                                                   ("coreml", "model.onnx", "must end in .mlpackage")])
def test_a_wrong_file_name_is_one_line_and_writes_nothing(digits_run, tmp_path, fmt, name, says):
    done = subprocess.run([sys.executable, "-m", "cnnarena.cli", "export", str(digits_run), "--format", fmt,
                           "--output", str(tmp_path / name)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_what_native_code_logs_is_held_back_and_shown_only_when_the_block_fails():
    """A converter's C++ logs (written to file descriptor 2, past Python's redirection) stay off the terminal."""
    code = ("import os, sys\nfrom cnnarena.export.quiet import native_stderr_held\n"
            "with native_stderr_held():\n    os.write(2, b'held back\\n')\n"
            "print('after', file=sys.stderr, flush=True)\n"
            "with native_stderr_held():\n    os.write(2, b'shown with the failure\\n'); raise SystemExit(3)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and done.stderr == "after\nshown with the failure\n"
