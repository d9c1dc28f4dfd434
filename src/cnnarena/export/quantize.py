"""An int8 ONNX model from a run's float export: ONNX Runtime's static quantization, calibrated on the run's own
training images, kept only when its accuracy on the run's test split stays within `max_drop` points of the float
model's; its card records both accuracies and the images/s of both at batch 1 and 64, each model with the
intra-op thread count it runs fastest with at that batch size (speed.py; `serve` runs it so).

Operator format (QLinearConv, QGemm, and pooling on quantized tensors), int8 weights per output channel, uint8
activations, MinMax calibration, after the rewrites of int8_rewrites (same function, faster or more accurate
int8). Where the first convolution reads the image's few channels, the graph is quantized twice, with that stem in
int8 and in float, and the faster at batch 1 and 64 is kept. With every ReLU behind a convolution, the whole graph
runs in uint8; symmetric activation ranges would keep each ReLU in float between a dequantize and a quantize. The
QDQ format leaves Q/DQ pairs around every op ONNX Runtime does not fuse and ran simple-2conv slower than float;
int8 activations ran ~10x slower than uint8 (benchmarks/results/int8_export.json).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import rundir
from ..errors import UserError
from ..files import as_umask_allows, atomic_write_text
from .int8_rewrites import flatten_channels_last, float_logits, float_stem, relu_before_max_pool
from .onnx import INPUT_NAME, OUTPUT_NAME, card_path_for
from .snippets import usage
from .speed import DEFAULT_THREADS, compare_speed, session

log = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"  # in the run directory: what `serve --backend onnx-int8` serves
CALIBRATION_IMAGES = 256
EVAL_BATCH = 256


def run_images(run_dir: Path):
    """The run's split (train, val, test ImageSets) rebuilt from its config and split.json."""
    from ..config import load_saved
    from ..data.sources import load_data
    from ..data.split import load_manifest

    cfg = load_saved(run_dir)
    return load_manifest(Path(run_dir) / rundir.SPLIT, load_data(cfg))


def calibration_batches(images, count: int, seed: int = 0, batch: int = 32) -> list[np.ndarray]:
    """`count` training images drawn at random (seeded), as [0,1] float batches, as the model takes them."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(images), size=min(count, len(images)), replace=False))
    chosen = images[pick].numpy()
    return [chosen[i:i + batch].astype(np.float32) / np.float32(255.0) for i in range(0, len(chosen), batch)]


def accuracy(session, images, labels) -> float:
    correct = 0
    for i in range(0, len(images), EVAL_BATCH):
        x = images[i:i + EVAL_BATCH].numpy().astype(np.float32) / np.float32(255.0)
        logits = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        correct += int((logits.argmax(1) == labels[i:i + EVAL_BATCH].numpy()).sum())
    return correct / max(1, len(images))


def _quantize(float_path: Path, out_path: Path, batches: list[np.ndarray],
              keep_float: list[str]) -> tuple[str, list[str]]:
    """Quantize in the operator format, or in QDQ where that fails, leaving the nodes named in keep_float in float;
    a node ONNX Runtime then refuses to run stays float too, and the model is quantized again. Returns the format
    and the nodes left in float."""
    from onnxruntime.quantization import QuantFormat

    failure: Exception | None = None
    for fmt in (QuantFormat.QOperator, QuantFormat.QDQ):
        excluded: list[str] = list(keep_float)
        for _ in range(MAX_EXCLUDED + 1):
            try:
                _quantize_as(float_path, out_path, batches, fmt, excluded)
                session(out_path).run([OUTPUT_NAME], {INPUT_NAME: batches[0]})
                return ("QOperator" if fmt == QuantFormat.QOperator else "QDQ"), excluded
            except Exception as e:  # this format cannot quantize or run the graph as it is
                log.debug(f"int8 as {fmt} without {excluded}: {type(e).__name__}: {e}")
                failure = e
                refused = _refused_node(str(e))
                if refused is None or refused in excluded:
                    break
                excluded.append(refused)
    assert failure is not None
    raise failure


MAX_EXCLUDED = 12  # nodes left in float before giving a format up


def _quantize_fastest(float_path: Path, out_path: Path, batches: list[np.ndarray],
                      speed_seconds: float) -> tuple[str, list[str], dict[str, Any]]:
    """Quantize the whole graph and, where the first convolution reads the image's few channels, the graph with
    that stem left in float (int8_rewrites.float_stem); keep the faster at batch 1 and 64 together (geometric mean
    of images/s, the two measured in alternation). Returns the format, the float nodes and what was measured."""
    import onnx

    stem = float_stem(onnx.load(str(float_path)))
    if not stem:
        return (*_quantize(float_path, out_path, batches, []),
                {"float": False, "nodes": [], "measured": None, "intra_op_threads": None})
    with tempfile.TemporaryDirectory(prefix="cnnarena-int8-") as tmp:
        whole, kept = Path(tmp) / "whole.onnx", Path(tmp) / "float-stem.onnx"
        fmt, excluded = _quantize(float_path, whole, batches, [])
        try:
            kept_fmt, kept_excluded = _quantize(float_path, kept, batches, stem)
        except Exception as e:  # the whole graph quantized: the stem variant is only a faster candidate
            log.debug(f"int8 with a float stem {stem} failed: {type(e).__name__}: {e}")
            shutil.copyfile(whole, out_path)
            return fmt, excluded, {"float": False, "nodes": stem, "measured": None, "intra_op_threads": None}
        measured = compare_speed({"int8 stem": whole, "float stem": kept}, batches[0], speed_seconds)
        score = {name: float(np.prod(list(rates.values()))) for name, rates in measured["images_per_second"].items()}
        float_stem_wins = score["float stem"] > score["int8 stem"]
        shutil.copyfile(kept if float_stem_wins else whole, out_path)  # the temp dir may be on another disk
    if float_stem_wins:
        fmt, excluded = kept_fmt, kept_excluded
    return fmt, excluded, {"float": float_stem_wins, "nodes": stem, "measured": measured["images_per_second"],
                           "intra_op_threads": measured["intra_op_threads"]}


def _refused_node(message: str) -> str | None:
    """The quantized graph's node ONNX Runtime refused, as the float graph names it."""
    found = re.search(r"Name:'([^']+)'", message)
    return re.sub(r"(_quant)?(_token_\d+)?$", "", found.group(1)) if found else None


class _QuietShapeWarnings(logging.Filter):
    """ONNX Runtime's quantizer warns through the root logger, with a dump of each tensor type, about the integer
    shape tensors it (rightly) leaves alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Inference failed or unsupported type to quantize")


def _quantize_as(float_path: Path, out_path: Path, batches: list[np.ndarray], fmt, excluded: list[str]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {INPUT_NAME: x}

    import onnx

    with tempfile.TemporaryDirectory(prefix="cnnarena-int8-") as tmp:
        rewritten, prepared = Path(tmp) / "rewritten.onnx", Path(tmp) / "prepared.onnx"
        graph = onnx.load(str(float_path))
        flatten_channels_last(graph)
        relu_before_max_pool(graph, keep=frozenset(excluded))  # a pair left in float keeps its order
        onnx.save(graph, str(rewritten))
        try:  # shape inference and graph clean-up: ONNX Runtime's advice before quantizing
            quant_pre_process(str(rewritten), str(prepared), skip_symbolic_shape=False)
        except Exception as e:  # some graphs defeat symbolic shape inference; quantizing the export still works
            log.debug(f"quant_pre_process failed ({e}); quantizing the export as it is")
            prepared = rewritten
        quiet = _QuietShapeWarnings()
        logging.getLogger().addFilter(quiet)
        try:
            quantize_static(str(prepared), str(out_path), Reader(), quant_format=fmt, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded)
        finally:
            logging.getLogger().removeFilter(quiet)
    quantized = onnx.load(str(out_path))
    if float_logits(quantized):
        onnx.save(quantized, str(out_path))


def quantize_run(run_dir: Path, float_path: Path, output: Path, *, max_drop: float = 1.0,
                 calibration: int = CALIBRATION_IMAGES, speed_seconds: float = 2.0) -> dict[str, Any]:
    """Write output (an int8 ONNX model) and its card, or refuse with a UserError when the test accuracy drops by
    more than max_drop points; returns the card."""
    run_dir, output = Path(run_dir), Path(output)
    if output.suffix.lower() != ".onnx":
        raise UserError(f"--output must end in .onnx, got {output}")
    split = run_images(run_dir)
    batches = calibration_batches(split.train.images, calibration)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        t0 = time.perf_counter()
        try:
            fmt, excluded, stem = _quantize_fastest(float_path, tmp, batches, speed_seconds)
        except Exception as e:  # the quantizer's failures all mean "cannot quantize this graph"
            raise UserError(f"int8 quantization of {run_dir} failed: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from e
        seconds = time.perf_counter() - t0
        float_session, int8_session = session(float_path), session(tmp)
        test = split.test
        acc_float = accuracy(float_session, test.images, test.labels)
        try:
            acc_int8 = accuracy(int8_session, test.images, test.labels)
        except Exception as e:  # ONNX Runtime refused a quantized op at this batch size
            raise UserError(f"the int8 model of {run_dir} does not run in ONNX Runtime: {type(e).__name__}: "
                            f"{str(e).splitlines()[0]}") from e
        drop = 100 * (acc_float - acc_int8)
        if drop > max_drop:
            raise UserError(f"the int8 model loses {drop:.2f} points of test accuracy ({acc_float:.4f} float, "
                            f"{acc_int8:.4f} int8 on {len(test)} images), more than --max-drop {max_drop:g}: "
                            f"not written")
        speed = compare_speed({"float": float_path, "int8": tmp}, batches[0], speed_seconds)
        rates, by_threads = speed["images_per_second"], speed["by_threads"]
        default = str(DEFAULT_THREADS)
        float_card = json.loads(card_path_for(float_path).read_text())
        card = {**float_card, "onnx_file": output.name, "quantization": {
            "method": "onnxruntime static quantization", "format": fmt, "weights": "int8, per channel",
            "activations": "uint8", "calibration": "MinMax",
            "calibration_images": sum(len(b) for b in batches), "calibrated_on": "the run's training split",
            "seconds": round(seconds, 2), "float_nodes": excluded, "stem": stem},
            "accuracy": {"float": acc_float, "int8": acc_int8, "drop_points": round(drop, 3),
                         "max_drop_points": max_drop, "test_images": len(test)},
            "images_per_second": rates, "intra_op_threads": speed["intra_op_threads"],
            "images_per_second_by_threads": by_threads,
            "speedup": {b: round(rates["int8"][b] / rates["float"][b], 2) for b in rates["int8"]},
            "speedup_default_threads": {b: round(by_threads["int8"][b][default] / by_threads["float"][b][default], 2)
                                        for b in by_threads["int8"]},
            "file_bytes": {"float": float_path.stat().st_size, "int8": tmp.stat().st_size}}
        card.pop("check", None)  # the float export's exactness check: an int8 model is judged by its accuracy
        card.pop("onnx_sha256", None)
        as_umask_allows(tmp)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    card["usage"] = usage(card, card_path_for(output).name)
    atomic_write_text(card_path_for(output), json.dumps(card, indent=1))
    return card
