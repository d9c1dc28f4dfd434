"""`cnnarena export RUN_DIR --format openvino`: OpenVINO IR (model.xml + model.bin), converted from the checked ONNX
export with OpenVINO's own converter and run with its CPU runtime, the one Intel CPUs, iGPUs and NPUs take.

The IR is kept only when OpenVINO's logits match PyTorch's within TOLERANCE at two batch sizes. Its card adds the
test accuracy next to ONNX Runtime's (the same weights, so they should agree), and images/s at batch 1 and 64 for
both runtimes, measured one after the other on this machine.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..files import atomic_write_text
from .onnx import CHECK_BATCHES, INPUT_NAME, export_onnx, logit_differences
from .quantize import accuracy, run_images
from .snippets import python
from .speed import SPEED_BATCHES, images_per_second, session

TOLERANCE = 1e-4  # max |OpenVINO - PyTorch| on logits, as for ONNX Runtime


class _Runner:
    """An OpenVINO compiled model behind ONNX Runtime's `run` signature, for the shared accuracy and speed code."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled

    def run(self, _outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.compiled(feeds[INPUT_NAME])[0]]


# OpenVINO's CPU plugin runs in bfloat16 by default where the CPU has it (Zen 4, Sapphire Rapids): logits then move
# by ~1e-2. The check, and the card's snippet, ask for float32, as the model was trained and checked.
FLOAT32 = {"INFERENCE_PRECISION_HINT": "f32"}


def card_path_of(xml: Path) -> Path:
    return xml.with_name(xml.name + ".card.json")


def export_openvino(run_dir: Path, output: Path | None = None, seconds: float = 2.0) -> tuple[Path, dict[str, Any]]:
    """Write model.xml + model.bin (default in RUN_DIR) and the card, once the checks pass; returns (xml, card)."""
    try:
        import openvino as ov
    except ImportError:
        raise UserError("--format openvino needs OpenVINO: pip install 'cnnarena[openvino]' (or openvino)") from None
    xml = Path(output) if output else Path(run_dir) / "model.xml"
    if xml.suffix.lower() != ".xml":
        raise UserError(f"--output must end in .xml (OpenVINO writes the weights beside it, as .bin), got {xml}")
    with tempfile.TemporaryDirectory(prefix="cnnarena-openvino-") as tmp:
        onnx = export_onnx(Path(run_dir), Path(tmp) / "model.onnx")
        converted = ov.convert_model(str(onnx.onnx_path))
        staged = Path(tmp) / xml.name
        ov.save_model(converted, str(staged), compress_to_fp16=False)  # float32, as trained
        runner = _Runner(ov.Core().compile_model(str(staged), "CPU", FLOAT32))
        card = _checked_card(Path(run_dir), onnx.card, runner, session(onnx.onnx_path), seconds, ov.__version__)
        xml.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged.with_suffix(".bin")), xml.with_suffix(".bin"))
        shutil.move(str(staged), xml)
    card.update(export_format="openvino", xml_file=xml.name, bin_file=xml.with_suffix(".bin").name)
    card.pop("onnx_file", None)
    card.pop("onnx_sha256", None)
    card["usage"] = {"python": python(card, card_path_of(xml).name, "import openvino as ov",
                                      f'model = ov.Core().compile_model({json.dumps(xml.name)}, "CPU", {FLOAT32!r})',
                                      "model(x)[0][0]")}
    atomic_write_text(card_path_of(xml), json.dumps(card, indent=1))
    return xml, card


def _checked_card(run_dir: Path, card: dict[str, Any], runner: _Runner, onnx_runtime, seconds: float,
                  version: str) -> dict[str, Any]:
    from ..evaluate.predict import load_run_model

    diffs = logit_differences(load_run_model(run_dir).cpu().eval(), runner, card, CHECK_BATCHES)
    if not all(d <= TOLERANCE for d in diffs.values()):  # also catches NaN
        raise UserError(f"OpenVINO's logits differ from PyTorch's by up to {max(diffs.values()):.1e} (more than "
                        f"{TOLERANCE:.0e}): not written")
    test = run_images(run_dir).test
    sample = test.images[:1].numpy().astype(np.float32) / np.float32(255)
    speed = {name: {str(b): round(images_per_second(r, sample, b, seconds), 1) for b in SPEED_BATCHES}
             for name, r in (("openvino", runner), ("onnxruntime", onnx_runtime))}
    return {**card, "check": {"runtime": f"OpenVINO {version}, CPU, float32", "max_abs_diff": diffs,
                              "tolerance": TOLERANCE},
            "accuracy": {"openvino": accuracy(runner, test.images, test.labels),
                         "onnxruntime": accuracy(onnx_runtime, test.images, test.labels), "test_images": len(test)},
            "images_per_second": speed}
