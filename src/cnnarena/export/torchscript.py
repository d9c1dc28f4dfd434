"""PyTorch-only deployments: the whole Classifier as TorchScript (torch.jit.load, also from C++ with libtorch) or as
a torch.export archive (.pt2, torch.export.load), each taking what the ONNX export takes ([0,1] N×C×H×W at the
training data's size), each kept only when its logits match the run's model at two batch sizes."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import as_umask_allows, atomic_write_text
from .onnx import CHECK_BATCHES, model_card

FORMATS = {"torchscript": ".pt", "pt2": ".pt2"}
TOLERANCE = 1e-4


def card_path_of(output: Path) -> Path:
    """model.pt -> model.pt.card.json (model.card.json is the ONNX export's)."""
    return output.with_name(output.name + ".card.json")


def _write(model, example, path: Path, fmt: str) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's note that the adapter's H×W test becomes a constant
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(model, (example,), check_trace=False), str(path))
        else:
            batch = torch.export.Dim("batch", min=1, max=65536)
            program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
            torch.export.save(program, str(path))


def _load(path: Path, fmt: str):
    import torch

    if fmt == "pt2":
        return torch.export.load(str(path)).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.10+ deprecates TorchScript; it still loads it
        return torch.jit.load(str(path))


def export_pytorch(run_dir: Path, output: Path | None, fmt: str) -> tuple[Path, dict[str, Any]]:
    """Write output (default RUN_DIR/model.pt or model.pt2) and its card once the check passed."""
    from ..evaluate.predict import check_run_dir, load_run_model

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}: use onnx, {', '.join(FORMATS)}")
    run_dir = check_run_dir(run_dir)
    import torch

    model = load_run_model(run_dir).cpu().eval()
    output = Path(output) if output else run_dir / f"model{FORMATS[fmt]}"
    if output.suffix != FORMATS[fmt]:
        raise UserError(f"--output of a {fmt} export must end in {FORMATS[fmt]}, got {output}")
    meta = model.meta
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=FORMATS[fmt])
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            _write(model, torch.rand(2, meta.in_chans, *meta.data_size), tmp, fmt)
            loaded = _load(tmp, fmt)
        except Exception as e:  # tracing / export failures all mean "cannot export"
            raise UserError(f"{fmt} export of {run_dir} failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
        gen = torch.Generator().manual_seed(0)
        diffs = {}
        for n in CHECK_BATCHES:
            x = torch.rand(n, meta.in_chans, *meta.data_size, generator=gen)
            with torch.inference_mode():
                diff = float((loaded(x) - model(x)).abs().max())
            if not diff <= TOLERANCE:
                raise UserError(f"{fmt} export check failed: logits differ from the run's model by {diff:.2e} at "
                                f"batch {n} (tolerance {TOLERANCE:.0e})")
            diffs[str(n)] = diff
        as_umask_allows(tmp)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    card = model_card(model, run_dir) | {
        "file": output.name, "export_format": fmt, "torch": torch.__version__,
        "load": "torch.jit.load(path)" if fmt == "torchscript" else "torch.export.load(path).module()",
        "check": {"max_abs_diff": diffs, "tolerance": TOLERANCE}}
    card_path = card_path_of(output)
    atomic_write_text(card_path, json.dumps(card, indent=1))
    return output, card
