"""The Python lines that the model card and `cnnarena export` give for running an exported model: run as a user
would paste them, beside the model, they name the class that `Run.predict` names, for a grayscale and a colour
model, from the float and the int8 export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnarena

pytestmark = pytest.mark.slow  # exports, and a colour model trained here


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory) -> Path:
    """simple-2conv on real digits 3 and 8, drawn in red or blue on a tinted ground, 32 px RGB PNGs."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("colour")
    digits = load_digits()
    rng = np.random.default_rng(0)
    for label in (3, 8):
        (root / "data" / f"d{label}").mkdir(parents=True)
        for k in np.flatnonzero(digits.target == label):
            ink = np.asarray(Image.fromarray((digits.images[k] * 255 / 16).astype(np.uint8)).resize((32, 32)))
            colour = np.array([220, 40, 40] if rng.random() < 0.5 else [40, 40, 220], np.float32)
            ground = rng.uniform(150, 255, 3).astype(np.float32)
            a = ink[..., None] / 255.0
            Image.fromarray((a * colour + (1 - a) * ground).astype(np.uint8)).save(root / "data" / f"d{label}" /
                                                                               f"{k:04d}.png")
    return cnnarena.train(root / "data", model="simple-2conv", out=root / "run", epochs=2).path


def _snippet_answer(card_path: Path, image: Path) -> str:
    card = json.loads(card_path.read_text())
    code = card["usage"]["python"].replace('"image.jpg"', repr(str(image)))
    done = subprocess.run([sys.executable, "-c", code], cwd=card_path.parent, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[0].rsplit(" ", 1)[0]


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_the_grayscale_snippet_names_what_predict_names(digits_run, tmp_path, int8):
    from sklearn.datasets import load_digits

    image = tmp_path / "digit.png"
    Image.fromarray((load_digits().images[11] * 255 / 16).astype(np.uint8)).save(image)
    name = "model.int8.onnx" if int8 else "model.onnx"
    model = cnnarena.load(digits_run).export(format="onnx", output=tmp_path / "out" / name, int8=int8, timing=0.2)
    expected = cnnarena.load(digits_run).predict(image)["label"][0]
    assert _snippet_answer(model.with_name(model.stem + ".card.json"), image) == expected


def test_the_colour_snippet_names_what_predict_names_even_with_transparency(colour_run, tmp_path):
    source = sorted((colour_run.parent / "data" / "d8").iterdir())[0]
    rgba = Image.open(source).convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, np.uint8)
    alpha[:4] = 0  # a transparent band: composited on white by both
    rgba.putalpha(Image.fromarray(alpha))
    image = tmp_path / "eight.png"
    rgba.save(image)
    model = cnnarena.load(colour_run).export(format="onnx", output=tmp_path / "out" / "model.onnx")
    expected = cnnarena.load(colour_run).predict(image)["label"][0]
    assert _snippet_answer(model.with_name("model.card.json"), image) == expected
