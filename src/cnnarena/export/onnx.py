"""Export a finished run's whole Classifier (adapter + network) to ONNX, with a model card, and check it.

The exported graph takes what the PyTorch model takes - float images in [0, 1], N×C×H×W at the
training data's stored size - so channel repeat, resize and normalisation travel inside the file and
a consumer only has to decode and scale pixels. An export is only kept when ONNX Runtime reproduces
PyTorch's logits at two batch sizes; otherwise it fails loudly.

Exporter: the TorchScript exporter (dynamo=False) by default. It needs nothing beyond torch and onnx,
exports the custom CNNs and timm's EfficientNet-Lite0 in about a second, and `dynamic_axes` makes the
batch axis symbolic. The torch.export-based exporter (torch's default since 2.9) also works for both,
but needs the onnxscript package, which is not a cnnarena dependency, and takes 4-15x longer; choose
it with exporter="dynamo".
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import rundir
from ..errors import UserError
from .snippets import usage

if TYPE_CHECKING:
    from ..models.base import Classifier

OPSET = 17
TOLERANCE = 1e-4  # max |ORT - PyTorch| on logits
CHECK_BATCHES = (1, 7)
INPUT_NAME, OUTPUT_NAME = "images", "logits"
CARD_FORMAT = "cnnarena-model-card/1"
EXPORTERS = ("torchscript", "dynamo")
MIN_OPSET = 7  # torch.onnx.export's documented minimum (opset_version "must be >= 7")
FALLBACK_MAX_OPSET = {"torchscript": 20, "dynamo": 23}  # torch 2.9-2.14, should probing find nothing


@dataclass
class ExportResult:
    onnx_path: Path
    card_path: Path
    card: dict[str, Any]


def card_path_for(onnx_path: Path) -> Path:
    # model.onnx -> model.card.json: never model.json, which is the run's checkpoint metadata.
    return onnx_path.with_name(onnx_path.stem + ".card.json")


def model_card(model: Classifier, run_dir: Path) -> dict[str, Any]:
    """What a consumer of the model needs to know: classes, input contract, normalisation, metrics."""
    meta = model.meta
    metrics_path = Path(run_dir) / rundir.METRICS
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    total = sum(p.numel() for p in model.parameters())
    return {
        "format": CARD_FORMAT,
        "model": meta.name,
        "family": meta.family,
        "data": metrics.get("data"),
        "classes": list(meta.classes),
        "num_classes": meta.num_classes,
        "input": {
            "name": INPUT_NAME, "shape": ["batch", meta.in_chans, *meta.data_size], "dtype": "float32",
            "layout": "NCHW", "range": [0.0, 1.0],
            "channels": meta.in_chans, "color": "grayscale" if meta.in_chans == 1 else "RGB",
            "size": list(meta.data_size),
            "preprocess": f"decode, convert to {'L' if meta.in_chans == 1 else 'RGB'} (alpha on white), resize to "
                          f"{meta.data_size[0]}x{meta.data_size[1]} with LANCZOS, divide by 255",
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", meta.num_classes],
                   "meaning": "logits; softmax gives class probabilities in `classes` order"},
        "network_input_size": list(meta.input_size),
        "normalisation": {"mean": list(meta.mean), "std": list(meta.std), "applied": "inside the model",
                          "note": "feed [0,1] pixels; do not normalise again"},
        "params": total,
        "metrics": {k: v for k, v in metrics.items() if k != "confusion_matrix"},
        "source_run": str(Path(run_dir).resolve()),
    }


@functools.cache
def supported_opsets(exporter: str) -> tuple[int, int]:
    """The lowest and highest ONNX opset `exporter` can write with the installed torch.

    Found from public behaviour, once per process: a tiny export (an Identity module, into memory, about
    2 ms) at each opset upwards from torch.onnx.export's documented minimum. The TorchScript exporter warns
    (torch.onnx.errors.OnnxExporterWarning) above the newest opset it supports itself and refuses outright
    above the newest torch knows: its maximum is the last opset with neither, the dynamo exporter's the last
    one not refused; neither beyond what the onnx package knows. The probes take ~30 ms beyond importing
    onnx, which any export does. The dynamo exporter writes at least opset 18 whatever it is asked for.
    """
    if exporter not in EXPORTERS:
        raise UserError(f"unknown exporter {exporter!r}: use {' or '.join(EXPORTERS)}")
    accepted = ("ok",) if exporter == "torchscript" else ("ok", "warned")
    high = None
    for opset in range(MIN_OPSET, MIN_OPSET + 100):  # the bound only guards against a probe that never refuses
        verdict = _probe_opset(opset)
        if verdict not in accepted:
            break
        high = opset
    import onnx.defs  # already loaded by the exporter; its checker (check_onnx) knows no newer opset

    newest = onnx.defs.onnx_opset_version()
    return MIN_OPSET, min(newest, high if high is not None else FALLBACK_MAX_OPSET[exporter])


@functools.cache
def _probe_opset(opset: int) -> str:
    """"ok", "warned" (exported, but the exporter says the opset is not supported) or "refused"."""
    import torch
    from torch.onnx.errors import OnnxExporterWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(torch.nn.Identity(), (torch.zeros(1),), io.BytesIO(), dynamo=False,
                              opset_version=opset)
        except Exception:  # e.g. RuntimeError("Unsupported onnx_opset_version: 24")
            return "refused"
    return "warned" if any(issubclass(w.category, OnnxExporterWarning) for w in caught) else "ok"


def _export_graph(model: Classifier, path: Path, exporter: str, opset: int) -> None:
    import torch

    from .static_padding import with_static_padding

    meta = model.meta
    example = torch.rand(2, meta.in_chans, *meta.data_size)  # batch 2: a batch of 1 may be specialised
    model = with_static_padding(model, example)
    with warnings.catch_warnings():
        # Expected noise: the TorchScript exporter's deprecation notice, and the tracer's note that the
        # adapter's resize test on H×W becomes a constant (H×W are fixed by design; only N varies).
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            try:
                import onnxscript  # noqa: F401
            except ImportError:
                raise UserError("the dynamo exporter needs the onnxscript package: pip install onnxscript, "
                                "or use the default --exporter torchscript") from None
            batch = torch.export.Dim("batch", min=1, max=65536)
            torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_shapes={"x": {0: batch}},
                              opset_version=max(opset, 18), external_data=False, verbose=False)
        else:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def logit_differences(model: Classifier, runner: Any, card: dict[str, Any],
                      batches: tuple[int, ...] = CHECK_BATCHES) -> dict[str, float]:
    """max |runner's logits - the model's| on seeded random images at each batch size, for a runner with ONNX
    Runtime's `run` signature (another runtime behind it: OpenVINO, LiteRT)."""
    import torch

    rng = np.random.default_rng(0)
    diffs = {}
    for batch in batches:
        x = rng.random((batch, card["input"]["channels"], *card["input"]["size"]), dtype=np.float32)
        with torch.inference_mode():
            expected = model(torch.from_numpy(x)).numpy()
        diffs[str(batch)] = float(np.abs(runner.run([OUTPUT_NAME], {INPUT_NAME: x})[0] - expected).max())
    return diffs


def check_onnx(model: Classifier, path: Path, batches: tuple[int, ...] = CHECK_BATCHES,
               tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Structural check, a symbolic batch axis, and ORT logits == PyTorch logits at each batch size."""
    import onnx
    import onnxruntime as ort
    import torch

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as e:  # any failure here means a broken export
        raise UserError(f"export check failed: {path} is not a valid ONNX model ({e})") from None
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if not dims or not dims[0].dim_param:
        raise UserError(f"export check failed: batch axis of {path} is fixed ({dims[0].dim_value if dims else '?'})"
                        ", not dynamic")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = model.meta
    gen = torch.Generator().manual_seed(0)
    diffs: dict[str, float] = {}
    for n in batches:
        x = torch.rand(n, meta.in_chans, *meta.data_size, generator=gen)
        with torch.inference_mode():
            expected = model(x).float().numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape:
            raise UserError(f"export check failed: ONNX output shape {got.shape} at batch {n}, "
                            f"PyTorch gives {expected.shape}")
        diff = float(np.abs(got - expected).max())
        if not diff <= tolerance:  # also catches NaN
            raise UserError(f"export check failed: ONNX Runtime logits differ from PyTorch by {diff:.2e} at "
                            f"batch {n} (tolerance {tolerance:.0e})")
        diffs[str(n)] = diff
    return {"batch_axis": dims[0].dim_param, "max_abs_diff": diffs, "tolerance": tolerance,
            "runtime": f"onnxruntime {ort.__version__}"}


def export_onnx(run_dir: Path, output: Path | None = None, *, exporter: str = "torchscript", opset: int = OPSET,
                model: Classifier | None = None) -> ExportResult:
    """Write output (default RUN_DIR/model.onnx) and its model card, both only once the check passed."""
    from ..evaluate.predict import check_run_dir, load_run_model

    if exporter not in EXPORTERS:
        raise UserError(f"unknown exporter {exporter!r}: use {' or '.join(EXPORTERS)}")
    run_dir = check_run_dir(run_dir)  # before importing torch: a mistyped path fails in a blink
    import torch

    from ..files import as_umask_allows, atomic_write_text

    model = (model or load_run_model(run_dir)).cpu().eval()
    output = Path(output) if output else run_dir / "model.onnx"
    if output.suffix.lower() != ".onnx":
        raise UserError(f"--output must end in .onnx, got {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            _export_graph(model, tmp, exporter, opset)
        except UserError:
            raise
        except Exception as e:  # the exporter's many failure types all mean "cannot export"
            raise UserError(f"ONNX export of {run_dir} failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
        check = check_onnx(model, tmp)
        card = model_card(model, run_dir)
        card.update({
            "onnx_file": output.name, "onnx_sha256": hashlib.sha256(tmp.read_bytes()).hexdigest(),
            "opset": _opset_of(tmp), "exporter": f"torch.onnx ({exporter}), torch {torch.__version__}",
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"), "check": check,
        })
        as_umask_allows(tmp)  # mkstemp makes it private; an exported model is meant to be shared
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    card_path = card_path_for(output)
    card["usage"] = usage(card, card_path.name)
    atomic_write_text(card_path, json.dumps(card, indent=1))
    as_umask_allows(card_path)
    return ExportResult(output, card_path, card)


def _opset_of(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
