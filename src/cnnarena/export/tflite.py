"""`cnnarena export RUN_DIR --format tflite [--int8]`: a LiteRT (TensorFlow Lite) model for phones and small
devices, converted from the PyTorch model by litert-torch and run with the LiteRT interpreter (ai-edge-litert).

litert-torch was chosen over onnx2tf: it converts from PyTorch directly, without TensorFlow installed (onnx2tf
needs all of TensorFlow), and is Google's own converter for LiteRT.

The file takes one image at a time (batch 1), as phone apps do; litert-torch cannot convert a flatten with a
dynamic batch. A twin converted at batch 64 serves the checks and the batch-64 timing, and is not kept.
- float: kept when LiteRT's logits match PyTorch's within TOLERANCE at both batch sizes;
- int8 (weights and activations, calibrated on training images with ai-edge-quantizer's static recipe): kept when
  its test accuracy is at most max_drop points below the float model's.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..files import atomic_write, atomic_write_text
from .onnx import INPUT_NAME, logit_differences, model_card
from .quantize import accuracy, calibration_batches, run_images
from .quiet import first_line, native_stderr_held, quietly, tail
from .snippets import python
from .speed import SPEED_BATCHES, images_per_second

TOLERANCE = 1e-4  # max |LiteRT - PyTorch| on logits, as for ONNX Runtime
CHECK_BATCHES = (1, 64)
SIGNATURE = "serving_default"

LOAD = '''interpreter = Interpreter(model_path={file})
interpreter.allocate_tensors()
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
def logits_of(x):  # an int8 model takes and gives int8: (de)quantize with its scale and zero point
    scale, zero = inp["quantization"]
    if scale:
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    y, (scale, zero) = interpreter.get_tensor(out["index"]).astype(np.float32), out["quantization"]
    return (y - zero) * scale if scale else y'''


class Runner:
    """LiteRT interpreters of one model at several fixed batch sizes behind ONNX Runtime's `run` signature (for the
    shared accuracy and speed code): a batch runs through the largest interpreter, padded, in pieces."""

    def __init__(self, paths: dict[int, Path]) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreters = {}
        for batch, path in paths.items():
            interpreter = Interpreter(model_path=str(path))
            interpreter.allocate_tensors()
            self.interpreters[batch] = interpreter

    def _one(self, interpreter, x: np.ndarray) -> np.ndarray:
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        scale, zero = inp["quantization"]
        if scale:
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(x))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"]).astype(np.float32)
        scale, zero = out["quantization"]
        return (y - zero) * scale if scale else y

    def run(self, _outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds[INPUT_NAME]
        batch = len(x) if len(x) in self.interpreters else max(self.interpreters)
        interpreter, pieces = self.interpreters[batch], []
        for start in range(0, len(x), batch):
            piece = x[start:start + batch]
            padded = np.concatenate([piece, np.repeat(piece[-1:], batch - len(piece), 0)]) if len(piece) < batch \
                else piece
            pieces.append(self._one(interpreter, padded)[:len(piece)])
        return [np.concatenate(pieces)]


def card_path_of(path: Path) -> Path:
    return path.with_name(path.name + ".card.json")


def export_tflite(run_dir: Path, output: Path | None = None, *, int8: bool = False, max_drop: float = 1.0,
                  calibration: int = 256, seconds: float = 2.0) -> tuple[Path, dict[str, Any]]:
    """Write model.tflite (or model.int8.tflite) and its card, once the checks pass; returns (path, card)."""
    path = Path(output) if output else Path(run_dir) / ("model.int8.tflite" if int8 else "model.tflite")
    if path.suffix.lower() != ".tflite":  # before the converter's import, which takes seconds and may log
        raise UserError(f"--output must end in .tflite, got {path}")
    try:
        with quietly(), native_stderr_held():  # TensorFlow's C++ logs a line on import on some CPUs (oneDNN)
            import ai_edge_litert  # noqa: F401 - the runtime the checks run on
            import litert_torch
    except ImportError:
        raise UserError("--format tflite needs litert-torch and ai-edge-litert: pip install 'cnnarena[tflite]'") \
            from None
    from ..evaluate.predict import load_run_model

    model = load_run_model(Path(run_dir)).cpu().eval()
    card = model_card(model, Path(run_dir))
    # the converter and the interpreter log from C++ (op counts, the XNNPACK delegate): shown only if it fails
    with native_stderr_held(), tempfile.TemporaryDirectory(prefix="cnnarena-tflite-") as tmp:
        floats = {b: _convert(litert_torch, model, card, b, Path(tmp) / f"float-{b}.tflite") for b in CHECK_BATCHES}
        test = run_images(Path(run_dir)).test
        float_runner = Runner(floats)
        diffs = logit_differences(model, float_runner, card, CHECK_BATCHES)
        if not all(d <= TOLERANCE for d in diffs.values()):  # also catches NaN
            raise UserError(f"LiteRT's logits differ from PyTorch's by up to {max(diffs.values()):.1e} (more than "
                            f"{TOLERANCE:.0e}): not written")
        checked = {"max_abs_diff": diffs, "tolerance": TOLERANCE}
        float_accuracy = accuracy(Runner({1: floats[1]}), test.images, test.labels)  # the file that is written
        runners, kept = {"float": float_runner}, floats
        if int8:
            batches = calibration_batches(run_images(Path(run_dir)).train.images, calibration)
            kept = {b: _quantize(p, batches, Path(tmp) / f"int8-{b}.tflite") for b, p in floats.items()}
            runners["int8"] = Runner(kept)
        card.update(_measured(runners, Runner({1: kept[1]}), test, float_accuracy, max_drop, seconds, checked))
        atomic_write(path, lambda tmp: shutil.copyfile(kept[1], tmp))  # whole or not at all
    return path, _finish_card(card, path, int8)


def _convert(litert_torch, model, card: dict[str, Any], batch: int, path: Path) -> Path:
    import torch

    x = torch.rand(batch, card["input"]["channels"], *card["input"]["size"])
    with quietly() as said:
        try:
            litert_torch.convert(model, (x,)).export(str(path))
        except Exception as e:  # the converter's many failure types all mean "cannot export"
            raise UserError(f"LiteRT conversion failed: {type(e).__name__}: {first_line(e)} "
                            f"(the converter said: {tail(said)})") from e
    return path


def _quantize(float_path: Path, batches: list[np.ndarray], path: Path) -> Path:
    """Static int8 (weights and activations), calibrated on training images."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    interpreter = Interpreter(model_path=str(float_path))
    name = interpreter.get_signature_list()[SIGNATURE]["inputs"][0]
    batch = interpreter.get_input_details()[0]["shape"][0]
    images = np.concatenate(batches)
    padded = np.concatenate([images, np.repeat(images[-1:], -len(images) % batch, 0)])  # every image, both sizes
    samples = [{name: padded[i:i + batch]} for i in range(0, len(padded), batch)]
    with quietly() as said:
        try:
            q = quantizer.Quantizer(str(float_path))
            q.load_quantization_recipe(recipe.static_wi8_ai8())
            q.quantize(q.calibrate({SIGNATURE: samples})).export_model(str(path), overwrite=True)
        except Exception as e:  # the quantizer's many failure types all mean "cannot quantize"
            raise UserError(f"LiteRT int8 quantization failed: {type(e).__name__}: {first_line(e)} (the quantizer "
                            f"said: {tail(said)})") from e
    return path


def _measured(runners: dict[str, Runner], written: Runner, test, float_accuracy: float, max_drop: float,
              seconds: float, checked: dict[str, Any]) -> dict[str, Any]:
    """Test accuracy (of `written`, the batch-1 file that is kept) and images/s of each runner at SPEED_BATCHES."""
    import ai_edge_litert

    acc = {"float": float_accuracy, "test_images": len(test)}
    if "int8" in runners:
        acc["int8"] = accuracy(written, test.images, test.labels)
        acc["drop_points"] = round(100 * (float_accuracy - acc["int8"]), 2)
        acc["max_drop_points"] = max_drop
        if acc["drop_points"] > max_drop:
            raise UserError(f"int8 LiteRT model: test accuracy {acc['int8']:.4f} against {float_accuracy:.4f} in "
                            f"float, {acc['drop_points']:.2f} points lost (more than --max-drop {max_drop:g}): "
                            "not written")
    sample = test.images[:1].numpy().astype(np.float32) / np.float32(255)
    speed = {name: {str(b): round(images_per_second(r, sample, b, seconds), 1) for b in SPEED_BATCHES}
             for name, r in runners.items()}
    runtime = f"LiteRT {getattr(ai_edge_litert, '__version__', '')} interpreter, CPU (XNNPACK)".replace("  ", " ")
    return {"check": {"runtime": runtime, **checked}, "accuracy": acc, "images_per_second": speed}


def _finish_card(card: dict[str, Any], path: Path, int8: bool) -> dict[str, Any]:
    card.update(export_format="tflite", tflite_file=path.name, precision="int8" if int8 else "float32",
                batch=1, file_bytes=path.stat().st_size)
    card["input"]["shape"] = [1, *card["input"]["shape"][1:]]
    card["output"]["shape"] = [1, *card["output"]["shape"][1:]]
    if int8:
        card["input"]["dtype"] = card["output"]["dtype"] = "int8 (quantized: see the file's scale and zero point)"
    card["usage"] = {"python": python(card, card_path_of(path).name,
                                      "from ai_edge_litert.interpreter import Interpreter",
                                      LOAD.format(file=json.dumps(path.name)), "logits_of(x)[0]")}
    atomic_write_text(card_path_of(path), json.dumps(card, indent=1))
    return card
