"""The ways to run a run's model for serving: ONNX Runtime (default), its int8 model (`cnnarena export --int8`
wrote it) or PyTorch eager.

Both take uint8 N×C×H×W batches (as decoded) and return float32 N×K probabilities, so the batcher
and the HTTP layer never know which one runs.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import rundir
from ..errors import UserError

if TYPE_CHECKING:
    from ..models.base import ModelMeta

BACKENDS = ("onnx", "onnx-int8", "torch")

log = logging.getLogger(__name__)


@dataclass
class Backend:
    name: str
    meta: ModelMeta
    card: dict[str, Any]
    infer: Any  # Callable[[np.ndarray], np.ndarray]
    keep: list[Any] = field(default_factory=list)  # objects that must outlive the backend (temp dirs)
    model: Any = None  # the run's PyTorch model (what /v1/explain computes heat maps with)
    sessions: Any = None  # ONNX backends: the SessionsByBatch that runs each batch


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def load_backend(run_dir: Path, kind: str = "onnx") -> Backend:
    from ..evaluate.predict import load_run_model
    from ..export.onnx import model_card

    if kind not in BACKENDS:
        raise UserError(f"unknown backend {kind!r}: use {' or '.join(BACKENDS)}")
    run_dir = Path(run_dir)
    model = load_run_model(run_dir).cpu().eval()
    if kind == "torch":
        import torch

        @torch.inference_mode()
        def infer_torch(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(batch).float().div_(255.0)
            return model(x).float().softmax(1).numpy()

        card = model_card(model, run_dir) | {"backend": "torch"}
        return Backend("torch", model.meta, card, infer_torch, model=model)
    return _onnx_backend(run_dir, model, int8=kind == "onnx-int8")


def _onnx_backend(run_dir: Path, model, int8: bool = False) -> Backend:
    from ..export.onnx import INPUT_NAME, OUTPUT_NAME, card_path_for, export_onnx
    from ..export.quantize import INT8_FILE
    from ..export.speed import SessionsByBatch

    keep: list[Any] = []
    onnx_path = run_dir / (INT8_FILE if int8 else "model.onnx")
    card_path = card_path_for(onnx_path)
    weights = run_dir / rundir.MODEL_WEIGHTS
    current = onnx_path.exists() and card_path.exists() and onnx_path.stat().st_mtime >= weights.stat().st_mtime
    if int8 and not current:  # quantizing needs the run's data and may refuse: a step of its own
        raise UserError(f"no int8 model of these weights in {run_dir}: run `cnnarena export {run_dir} --int8` "
                        "first" + (f" ({INT8_FILE} is older than model.safetensors)" if onnx_path.exists() else ""))
    if current:
        card = json.loads(card_path.read_text())  # a checked export of these very weights
    else:  # export (and check) into a temp dir: the run directory may be read-only or shared
        tmp = tempfile.TemporaryDirectory(prefix="cnnarena-serve-")
        keep.append(tmp)
        log.info(f"exporting {run_dir} to ONNX for serving (run `cnnarena export` once to skip this)")
        result = export_onnx(run_dir, Path(tmp.name) / "model.onnx", model=model)
        onnx_path, card = result.onnx_path, result.card
    # The thread count `export --int8` measured fastest for this model at each batch size (only an int8 card has
    # it), else ONNX Runtime's default. No busy-waiting between runs: the event loop and the decoders need the cores.
    threads_by_batch = card.get("intra_op_threads", {}).get("int8", {}) if "quantization" in card else {}
    sessions = SessionsByBatch(onnx_path, threads_by_batch, spinning=False)

    def infer_onnx(batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32) / np.float32(255.0)  # as the training loader scales
        return _softmax(sessions.for_batch(len(x)).run([OUTPUT_NAME], {INPUT_NAME: x})[0])

    name = "onnx-int8" if int8 else "onnx"
    return Backend(name, model.meta, card | {"backend": name}, infer_onnx, keep, model, sessions)
