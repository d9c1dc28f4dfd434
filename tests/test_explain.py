"""`cnnarena explain`: heat maps that point where the evidence is, for every kind of model, and the CLI's files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_run import run_cli
from PIL import Image

from cnnarena.config import build_config
from cnnarena.errors import UserError
from cnnarena.evaluate.predict import load_run_model
from cnnarena.explain.cam import METHODS, explain, pick_layer
from cnnarena.models.custom import PRESETS
from cnnarena.models.pretrained import ALIASES
from cnnarena.models.registry import create_model
from cnnarena.run import train_run

SIDE = 48
EVIDENCE = (slice(4, 20), slice(4, 20))  # the class is decided here: horizontal or vertical stripes
DISTRACTOR = (slice(28, 44), slice(28, 44))  # stripes of a random orientation: the same look, no information
CLASSES = ["horizontal", "vertical"]


def stripes(kind: str) -> np.ndarray:
    patch = np.zeros((16, 16), np.uint8)
    on = (np.arange(16) // 2) % 2 == 0
    if kind == "horizontal":
        patch[on, :] = 255
    else:
        patch[:, on] = 255
    return patch


def evidence_image(kind: str, rng: np.random.Generator) -> np.ndarray:
    image = rng.integers(0, 256, (SIDE, SIDE)).astype(np.uint8)  # noise everywhere else
    image[EVIDENCE] = stripes(kind)
    image[DISTRACTOR] = stripes(CLASSES[rng.integers(0, 2)])
    return image


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evidence")
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / "data" / kind).mkdir(parents=True)
        for i in range(300):
            Image.fromarray(evidence_image(kind, rng)).save(root / "data" / kind / f"{i}.png")
    metrics = train_run(build_config(None, {"data": str(root / "data"), "model": "simple-2conv", "epochs": 10,
                                            "seed": 0}), root / "run")
    assert metrics["test_accuracy"] > 0.97, metrics["test_accuracy"]
    return root


def evidence_share(model, method: str = "hirescam") -> float:
    """Mean share of the heat-map mass inside the evidence region (11% of the image), over 100 new images."""
    rng = np.random.default_rng(1)
    images = torch.from_numpy(np.stack([evidence_image(CLASSES[i % 2], rng)[None] for i in range(100)]))
    heat = explain(model, images, method=method).heat
    inside = np.zeros((SIDE, SIDE), bool)
    inside[EVIDENCE] = True
    return float(np.mean([(h * inside).sum() / max(float(h.sum()), 1e-9) for h in heat]))


@pytest.mark.slow  # a 10-epoch training on 600 images (~15 s)
def test_a_trained_model_looks_at_the_evidence_and_a_random_one_does_not(evidence_run):
    # HiResCAM (gradients x activations, cell by cell) follows simple-2conv's flatten + dense head faithfully.
    # Measured (3 training seeds; 5 random inits): trained 0.32-0.38, random 0.12-0.15 of the mass inside a region
    # of 11% of the pixels, with stripes of the same look in a distractor region.
    trained = evidence_share(load_run_model(evidence_run / "run"))
    assert trained >= 0.28, trained
    for seed in range(3):
        torch.manual_seed(seed)
        untrained = create_model("simple-2conv", num_classes=2, in_chans=1, data_size=(SIDE, SIDE), classes=CLASSES)
        share = evidence_share(untrained)
        assert share <= 0.2, (seed, share, trained)


@pytest.mark.slow
def test_the_cli_writes_a_png_per_image_a_grid_and_the_summary(evidence_run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(evidence_image("vertical", rng)).save(images / "v.png")
    Image.fromarray(evidence_image("horizontal", rng)).convert("RGB").resize((97, 61)).save(images / "h.jpg")
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "cnnarena.cli", "explain", str(evidence_run / "run"), str(images),
                           "--method", "gradcam++", "--out", str(out), "--top-k", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "explanations.json").read_text())
    assert summary["method"] == "gradcam++" and summary["layer"] == "net.7"
    by_name = {Path(r["path"]).name: r for r in summary["images"]}
    assert by_name["broken.png"]["error"] and "1 of 3 files could not be read" in done.stderr
    assert by_name["v.png"]["predictions"][0]["label"] == "vertical" == by_name["v.png"]["target"]
    for name in ("v.png", "h.jpg"):
        png = Image.open(out / by_name[name]["png"])
        assert png.size[0] > 600 and png.size[1] > 200
    assert Image.open(out / "grid.png").size[1] > 300

    target = subprocess.run([sys.executable, "-m", "cnnarena.cli", "explain", str(evidence_run / "run"),
                             str(images / "v.png"), "--target", "horizontal", "--layer", "net.3", "--out",
                             str(tmp_path / "t")], capture_output=True, text=True, timeout=300)
    assert target.returncode == 0, target.stderr
    summary = json.loads((tmp_path / "t" / "explanations.json").read_text())
    assert summary["layer"] == "net.3" and summary["images"][0]["target"] == "horizontal"


@pytest.mark.parametrize("args, message", [
    (["--method", "magic"], "unknown --method 'magic': use one of gradcam"),
    (["--target", "cat"], "--target 'cat' is not a class of this model"),
    (["--layer", "net.99"], "--layer net.99: no such layer; feature maps:"),
    (["--layer", "net.9"], "--layer net.9 does not output a feature map"),
])
def test_wrong_options_are_one_line_errors(digits_run, tmp_path, args, message, monkeypatch, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    code, _, err = run_cli(["explain", str(digits_run), str(image), "--out", str(tmp_path / "o"), *args],
                           monkeypatch, capsys)
    assert code != 0 and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def _maps_for(model, side: int, method: str = "gradcam") -> np.ndarray:
    images = (torch.rand(2, model.meta.in_chans, side, side) * 255).to(torch.uint8)
    return explain(model, images, method=method).heat


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_custom_preset_has_a_heat_map(preset):
    model = create_model(preset, num_classes=3, in_chans=1, data_size=(28, 28), classes=["a", "b", "c"])
    heat = _maps_for(model, 28)
    assert heat.shape == (2, 28, 28) and heat.min() >= 0 and heat.max() <= 1


def test_a_layer_spec_with_a_conv_and_one_without(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text("layers: [{conv: 8}, relu, {conv: {filters: 8, kernel: 3, stride: 2}}, relu, flatten, "
                    "{dense: 16}, relu]\n")
    model = create_model(str(spec), num_classes=2, in_chans=3, data_size=(20, 20), classes=["a", "b"])
    assert _maps_for(model, 20).shape == (2, 20, 20)
    dense = tmp_path / "dense.yaml"
    dense.write_text("layers: [flatten, {dense: 16}, relu]\n")
    model = create_model(str(dense), num_classes=2, in_chans=1, data_size=(8, 8), classes=["a", "b"])
    with pytest.raises(UserError, match="no convolutional feature map"):
        _maps_for(model, 8)


@pytest.mark.slow  # builds every listed backbone (vgg16 has 138 M parameters)
@pytest.mark.parametrize("backbone", sorted(ALIASES))
def test_every_listed_backbone_has_a_heat_map(backbone):
    model = create_model(backbone, num_classes=2, in_chans=3, data_size=(32, 32), classes=["a", "b"],
                         pretrained=False)
    for p in model.parameters():  # as a fine-tune's frozen phase leaves it: the map needs no trainable layer
        p.requires_grad_(False)
    heat = _maps_for(model, 32)
    assert heat.shape == (2, 32, 32) and np.isfinite(heat).all()
    layer = pick_layer(model, torch.rand(1, 3, 32, 32))
    assert len(layer.shape) == 3 and min(layer.shape[1:]) >= 1


def test_every_fast_method_runs_and_the_model_is_left_as_it_was():
    model = create_model("fast", num_classes=3, in_chans=3, data_size=(32, 32), classes=["a", "b", "c"])
    model.train()
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    for method in METHODS:
        if method in ("scorecam", "ablationcam"):
            continue
        assert _maps_for(model, 32, method).shape == (2, 32, 32), method
    assert model.training and before == {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())
