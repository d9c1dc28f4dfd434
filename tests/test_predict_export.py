"""`cnnarena predict` and `cnnarena export` on real runs: decoding like training, output formats, ONNX checks."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from cnnarena.config import build_config
from cnnarena.data.sources import load_source
from cnnarena.errors import UserError
from cnnarena.evaluate.predict import decode_for, load_run_model, predict_files
from cnnarena.export.onnx import check_onnx, export_onnx
from cnnarena.models.artefacts import save_model
from cnnarena.run import train_run

CLI = [sys.executable, "-m", "cnnarena.cli"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120)


def digits_image(index: int) -> np.ndarray:
    """The 8×8 uint8 pixels the digits source stores for sample `index`."""
    from sklearn.datasets import load_digits

    return (load_digits().images[index] * (255.0 / 16.0)).round().astype(np.uint8)


@pytest.fixture(scope="module")
def rgb_data(tmp_path_factory) -> Path:
    """A class-folder dataset in every mode training accepts: RGB, RGBA, palette, gray, 16-bit, EXIF-rotated."""
    root = tmp_path_factory.mktemp("rgb") / "data"
    rng = np.random.default_rng(0)
    colors = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}
    for name, color in colors.items():
        (root / name).mkdir(parents=True)
        for i in range(14):
            w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
            noise = rng.integers(-40, 40, (h, w, 3))
            img = Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8))
            kind = i % 7
            if kind == 1:
                img.convert("RGBA").save(root / name / f"{i}.png")
            elif kind == 2:
                img.convert("P", palette=Image.Palette.ADAPTIVE).save(root / name / f"{i}.gif")
            elif kind == 3:
                img.save(root / name / f"{i}.webp", lossless=True)
            elif kind == 4:
                exif = Image.Exif()
                exif[0x0112] = 6  # orientation: rotate 90° when displayed
                img.save(root / name / f"{i}.jpg", exif=exif, quality=95)
            elif kind == 5:
                img.save(root / name / f"{i}.bmp")
            else:
                img.save(root / name / f"{i}.png")
    gray16 = Image.fromarray((rng.integers(0, 65535, (30, 40))).astype(np.uint16))
    gray16.save(root / "red" / "gray16.png")
    return root


@pytest.fixture(scope="module")
def rgb_run(rgb_data: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("rgbrun") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNARENA_CACHE", str(tmp_path_factory.mktemp("cache")))
        cfg = build_config(None, {"data": str(rgb_data), "image_size": 32, "epochs": 2, "batch_size": 16})
        train_run(cfg, run)
    return run


@pytest.mark.slow  # ~3 s: trains rgb_run
def test_predict_decodes_every_file_exactly_like_training(rgb_data, rgb_run, tmp_path):
    model = load_run_model(rgb_run)
    assert model.meta.in_chans == 3 and model.meta.data_size == (32, 32)
    source = load_source(str(rgb_data), image_size=32, cache_dir=tmp_path / "cache")
    assert not source.skipped
    for i, sample_id in enumerate(source.pool.ids):
        got = decode_for(model.meta, str(rgb_data / sample_id))
        assert np.array_equal(got, source.pool.images[i].numpy()), sample_id
    # And the probabilities are the model's on those very pixels.
    rows = predict_files(model, [rgb_data], top=3, batch_size=8)
    assert [Path(r.path).relative_to(rgb_data).as_posix() for r in rows] == sorted(source.pool.ids)
    with torch.inference_mode():
        probs = model(source.pool.images.float() / 255).softmax(1)
    by_id = dict(zip(source.pool.ids, probs, strict=True))
    for r in rows:
        p = by_id[Path(r.path).relative_to(rgb_data).as_posix()]
        assert r.error is None and len(r.top) == 3
        assert r.top[0] == (model.meta.classes[int(p.argmax())], pytest.approx(float(p.max()), abs=1e-5))
        assert r.top[0][1] >= r.top[1][1] >= r.top[2][1]


def test_predict_function_reports_bad_files_and_skips_hidden_ones(digits_run, tmp_path):
    Image.fromarray(digits_image(0)).save(tmp_path / "zero.png")
    Image.fromarray(digits_image(0)).save(tmp_path / ".hidden.png")
    (tmp_path / ".git").mkdir()
    Image.fromarray(digits_image(0)).save(tmp_path / ".git" / "x.png")
    (tmp_path / "notes.txt").write_text("not an image, not listed")
    (tmp_path / "broken.png").write_bytes(b"plain text with an image's name")
    (tmp_path / "truncated.png").write_bytes(_png(Image.fromarray(digits_image(5)).resize((64, 64)))[:200])
    (tmp_path / "empty.jpg").write_bytes(b"")
    rows = predict_files(load_run_model(digits_run), [tmp_path, tmp_path / "missing.png"], top=2)
    errors = {Path(r.path).name: r.error for r in rows}
    assert errors == {"broken.png": "not an image", "empty.jpg": "empty file", "truncated.png": "truncated",
                      "zero.png": None, "missing.png": "missing"}


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digit_files(digits_run, tmp_path_factory) -> tuple[Path, dict[str, tuple[str, float]]]:
    """Test-split digits saved as files, with what the run itself predicted for them (predictions.csv)."""
    folder = tmp_path_factory.mktemp("digit-files")
    rows = list(csv.DictReader((digits_run / "predictions.csv").open()))[:12]
    expected = {}
    for n, row in enumerate(rows):
        index = int(row["id"].split("/")[1])
        name = f"{'nested/' if n % 3 == 0 else ''}digit{index}.png"
        (folder / name).parent.mkdir(exist_ok=True)
        Image.fromarray(digits_image(index)).save(folder / name)  # 8×8: decoded without resizing
        expected[str(folder / name)] = (row["predicted"], float(row["confidence"]))
    big = Image.fromarray(digits_image(int(rows[0]["id"].split("/")[1]))).resize((64, 64), Image.Resampling.NEAREST)
    big.convert("RGB").save(folder / "big_rgb.jpg", quality=95)  # another size and mode: must still be read
    (folder / "not_an_image.png").write_text("hello")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return folder, expected


@pytest.mark.slow  # a CLI subprocess
def test_predict_cli_json_on_folder_and_file(digits_run, digit_files, tmp_path):
    folder, expected = digit_files
    extra = tmp_path / "extra.png"
    Image.fromarray(digits_image(7)).save(extra)
    out = tmp_path / "out" / "preds.json"
    result = cli("predict", digits_run, folder, extra, "--format", "json", "--output", out, "--top-k", "3")
    assert result.returncode == 0, result.stderr
    assert "1 of 15 files could not be read" in result.stderr
    rows = {r["path"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {*expected, str(folder / "big_rgb.jpg"), str(folder / "not_an_image.png"), str(extra)}
    assert rows[str(folder / "not_an_image.png")] == {"path": str(folder / "not_an_image.png"),
                                                      "error": "not an image", "predictions": []}
    for path, (label, confidence) in expected.items():
        top = rows[path]["predictions"]
        assert rows[path]["error"] is None and len(top) == 3
        assert top[0]["label"] == label and top[0]["probability"] == pytest.approx(confidence, abs=1e-4)
        assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert len(rows[str(folder / "big_rgb.jpg")]["predictions"]) == 3


@pytest.mark.slow  # CLI subprocesses
def test_predict_cli_csv_and_table(digits_run, digit_files, tmp_path):
    folder, expected = digit_files
    out = tmp_path / "preds.csv"
    first = next(iter(expected))
    with ThreadPoolExecutor(2) as pool:  # two CLI processes at once: each spends most of its time importing
        result, table = pool.map(lambda args: cli(*args), [
            ("predict", digits_run, folder, "-f", "csv", "-o", out, "-k", "2"),
            ("predict", digits_run, folder / "not_an_image.png", first)])
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "error", "label_1", "probability_1", "label_2", "probability_2"]
    by_path = {r["path"]: r for r in rows}
    assert by_path[str(folder / "not_an_image.png")]["error"] == "not an image"
    for path, (label, confidence) in expected.items():
        assert by_path[path]["label_1"] == label
        assert float(by_path[path]["probability_1"]) == pytest.approx(confidence, abs=1e-4)
    # The default table goes to stdout, the bad file on its own line.
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["image", "top-1"] and len(lines) == 3
    assert "error: not an image" in lines[1] and lines[2].split()[1] == expected[first][0]


@pytest.mark.slow  # a CLI subprocess
@pytest.mark.parametrize("case", ["missing", "not-a-run", "a-file"])
def test_bad_run_dir_is_one_clear_line(case, tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(digits_image(0)).save(image)
    target = {"missing": tmp_path / "nope", "not-a-run": tmp_path, "a-file": image}[case]
    command = ("predict", target, image) if case != "a-file" else ("export", target)
    result = cli(*command)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow  # a CLI subprocess
def test_export_cli_writes_checked_onnx_and_card(rgb_run, tmp_path):
    out = tmp_path / "deploy" / "rgb.onnx"
    result = cli("export", rgb_run, "--format", "onnx", "--output", out)
    assert result.returncode == 0, result.stderr
    assert "check passed" in result.stdout
    card = json.loads((tmp_path / "deploy" / "rgb.card.json").read_text())
    metrics = json.loads((rgb_run / "metrics.json").read_text())
    assert card["classes"] == ["blue", "green", "red"]
    assert card["input"]["shape"] == ["batch", 3, 32, 32] and card["input"]["range"] == [0.0, 1.0]
    assert card["normalisation"]["applied"] == "inside the model"
    assert card["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    assert card["source_run"] == str(rgb_run.resolve()) and card["opset"] == 17 and card["exported_at"]
    assert set(card["check"]["max_abs_diff"]) == {"1", "7"}
    _assert_ort_matches_torch(out, load_run_model(rgb_run))


def _assert_ort_matches_torch(path: Path, model) -> None:
    proto = onnx.load(str(path))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [model.meta.in_chans, *model.meta.data_size]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7, 13):
        x = torch.rand(n, model.meta.in_chans, *model.meta.data_size)
        with torch.inference_mode():
            expected = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == (n, model.meta.num_classes)
        assert np.abs(got - expected).max() < 1e-4


def test_export_function_default_path_and_failed_checks(digits_run, tmp_path):
    digits_run = Path(shutil.copytree(digits_run, tmp_path / "run"))  # the shared run stays as trained: no card in it
    result = export_onnx(digits_run)
    assert result.onnx_path == digits_run / "model.onnx" and result.card_path == digits_run / "model.card.json"
    assert json.loads((digits_run / "model.json").read_text())["model"]["name"] == "simple-2conv"  # untouched
    model = load_run_model(digits_run)
    _assert_ort_matches_torch(result.onnx_path, model)
    # The check really compares: other weights, or a graph with a fixed batch axis, fail loudly.
    other = load_run_model(digits_run)
    with torch.no_grad():
        list(other.parameters())[-1].add_(1.0)  # the output layer's bias: every logit moves by 1
    with pytest.raises(UserError, match="differ from PyTorch"):
        check_onnx(other, result.onnx_path)
    fixed = tmp_path / "fixed.onnx"
    torch.onnx.export(model, (torch.rand(2, 1, 8, 8),), str(fixed), dynamo=False, input_names=["images"],
                      output_names=["logits"])
    with pytest.raises(UserError, match="batch axis .* is fixed"):
        check_onnx(model, fixed)
    with pytest.raises(UserError, match="must end in .onnx"):
        export_onnx(digits_run, tmp_path / "model.bin")


def test_a_loaded_model_runs_channels_last_as_it_trained(digits_run, tmp_path):
    """Training runs the convolutions channels-last; a loaded model does too (oneDNN is faster so on a CPU), with
    the same predictions, while the weights file stays as it was."""
    model = load_run_model(digits_run)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert any(not p.is_contiguous() for p in convs)  # (one input channel: both layouts have the same strides)
    save_model(model, tmp_path / "again")  # saved again from the channels-last model: the same file
    assert (tmp_path / "again.safetensors").read_bytes() == (digits_run / "model.safetensors").read_bytes()
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        cl = model(x)
        nchw = model.to(memory_format=torch.contiguous_format)(x)
    torch.testing.assert_close(cl, nchw, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # ~8 s: an EfficientNet-Lite0 export
def test_export_efficientnet_lite0_with_resize_inside(tmp_path):
    """timm's EfficientNet-Lite0 behind the adapter (gray 16×16 -> RGB 48×48) exports with a dynamic batch."""
    from cnnarena.models.registry import create_model

    model = create_model("efficientnet_lite0", num_classes=4, in_chans=1, data_size=(16, 16), classes=list("abcd"),
                         pretrained=False, input_size=48).eval()
    save_model(model, tmp_path / "run" / "model")
    result = export_onnx(tmp_path / "run")
    assert result.card["network_input_size"] == [48, 48] and result.card["input"]["channels"] == 1
    _assert_ort_matches_torch(result.onnx_path, load_run_model(tmp_path / "run"))


@pytest.mark.slow  # ~10 s: the dynamo exporter
def test_export_with_dynamo_exporter(digits_run, tmp_path):
    result = export_onnx(digits_run, tmp_path / "dynamo.onnx", exporter="dynamo")
    _assert_ort_matches_torch(result.onnx_path, load_run_model(digits_run))
