"""What can be done with a finished run: predict, evaluate, explain, export, serve.

Each action checks its arguments before it loads a model (a mistyped path fails in a blink), and returns what it
made; `Run`'s methods and the CLI's commands both call these.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import rundir
from .errors import UserError

EXPORT_FORMATS = ("onnx", "torchscript", "pt2", "web", "openvino", "tflite", "coreml")


def as_sources(images: Any) -> list[tuple[str, Any]]:
    """(name, path or in-memory PNG) for each image: paths and folders as given (folders searched), PIL images,
    and H×W(×C) uint8 arrays (named image-0, image-1, ... in the order given)."""
    import numpy as np

    from .evaluate.predict import collect_images

    items = images if isinstance(images, list | tuple) else [images]
    sources: list[tuple[str, Any]] = []
    for k, item in enumerate(items):
        if isinstance(item, str | Path):
            sources += [(str(p), str(p)) for p in collect_images([Path(item)])]
            continue
        from PIL import Image

        if isinstance(item, np.ndarray):
            item = Image.fromarray(_as_uint8(item))
        if not isinstance(item, Image.Image):
            raise UserError(f"cannot predict {type(item).__name__}: give file paths, folders, PIL images or arrays")
        buffer = io.BytesIO()
        item.save(buffer, format="PNG")
        buffer.seek(0)
        sources.append((f"image-{k}", buffer))
    return sources


def _as_uint8(pixels):
    """Pixels as uint8: floats in [0, 1] (as ToTensor gives them) are scaled to 0..255, other numbers clipped."""
    import numpy as np

    if pixels.dtype == np.uint8:
        return pixels
    if np.issubdtype(pixels.dtype, np.floating) and pixels.size and float(np.nanmax(pixels)) <= 1.0:
        pixels = pixels * 255.0
    return np.clip(np.nan_to_num(pixels), 0, 255).round().astype(np.uint8)


def predict(run_dir: Path, images: Any, *, top_k: int = 5, batch_size: int = 64) -> list:
    """Top-k predictions (evaluate.predict.Prediction) for every image; unreadable ones carry their error."""
    from .evaluate.predict import load_run_model, predict_sources

    rundir.check_run(run_dir)  # before the images: a mistyped run directory is the first thing to hear about
    if top_k < 1 or batch_size < 1:
        raise UserError(f"top_k and batch_size must be at least 1 (got {top_k}, {batch_size})")
    sources = as_sources(images)
    if not sources:
        given = images if isinstance(images, list | tuple) else [images]
        raise UserError(f"no image files found in {', '.join(map(str, given))}")
    return predict_sources(load_run_model(run_dir), sources, top=top_k, batch_size=batch_size)


def evaluate(run_dir: Path, data: str | None = None, tta: bool | None = None) -> dict[str, Any]:
    from .evaluate.reevaluate import reevaluate

    return reevaluate(Path(run_dir), data=data, tta=tta)


def explain(run_dir: Path, images: list, *, method: str = "gradcam", target: str | None = None,
            layer: str | None = None, top_k: int = 5, out: Path | None = None, device: str = "auto") -> dict:
    """Heat maps of where the model looks; the summary written to OUT/explanations.json, with "out" added."""
    from .evaluate.predict import load_run_model
    from .explain.cam import check_method

    rundir.check_run(run_dir)
    check_method(method)
    out = Path(out) if out else Path("explain") / Path(run_dir).resolve().name
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory: give a new or existing directory")
    rundir.check_parents(out, "--out")
    from .explain.images import explain_files
    from .train.loop import resolve_device

    model = load_run_model(run_dir).to(resolve_device(device))
    paths = [Path(p) for p in (images if isinstance(images, list | tuple) else [images])]
    return {**explain_files(model, paths, out, method=method, target=target, layer=layer, top=top_k), "out": str(out)}


@dataclass
class Exported:
    path: Path
    lines: list[str] = field(default_factory=list)  # what was checked, for a person


def export(run_dir: Path, format: str = "onnx", output: Path | None = None, *, int8: bool = False,
           exporter: str = "torchscript", opset: int = 17, max_drop: float = 1.0, calibration: int = 256,
           timing: float = 2.0) -> Exported:
    """The whole model (input [0,1] N×C×H×W) with a model card, checked against PyTorch."""
    from .export.onnx import EXPORTERS, supported_opsets

    if format not in EXPORT_FORMATS:
        raise UserError(f"unknown --format {format!r}: use {', '.join(EXPORT_FORMATS)}")
    if int8 and format not in ("onnx", "tflite"):
        raise UserError(f"--int8 quantizes ONNX and TFLite models: not with --format {format}")
    rundir.check_run(run_dir)
    if output is not None:
        if Path(output).is_dir() and format not in ("web", "coreml"):
            raise UserError(f"--output {output} is a directory: give a file name, e.g. {Path(output) / 'out'}")
        rundir.check_parents(Path(output), "--output")
    if format == "web":
        return _export_web(Path(run_dir), output, timing)
    if format == "openvino":
        return _export_openvino(Path(run_dir), output, timing)
    if format == "tflite":
        return _export_tflite(Path(run_dir), output, int8, max_drop, calibration, timing)
    if format == "coreml":
        return _export_coreml(Path(run_dir), output)
    if format != "onnx":
        return _export_pytorch(Path(run_dir), output, format)
    if exporter not in EXPORTERS:
        raise UserError(f"unknown --exporter {exporter!r}: use {' or '.join(EXPORTERS)}")
    low, high = supported_opsets(exporter)
    if not low <= opset <= high:
        raise UserError(f"--opset {opset} is not supported by the installed torch's {exporter} exporter: "
                        f"use {low} to {high}" + (" (values below 18 mean 18)" if exporter == "dynamo" else ""))
    if int8:
        return _export_int8(Path(run_dir), output, exporter, opset, max_drop, calibration, timing)
    from .export.onnx import export_onnx

    result = export_onnx(Path(run_dir), output, exporter=exporter, opset=opset)
    check = result.card["check"]
    diffs = ", ".join(f"{d:.1e} at batch {n}" for n, d in check["max_abs_diff"].items())
    return Exported(result.onnx_path, [
        f"wrote {result.onnx_path} (opset {result.card['opset']}) and {result.card_path}",
        f"check passed: batch axis {check['batch_axis']!r} is dynamic; ONNX Runtime logits match PyTorch within "
        f"{check['tolerance']:.0e} (max difference {diffs})", *_how_to_run(result.card)])


def _how_to_run(card: dict) -> list[str]:
    """The card's Python snippet, for the last lines of `cnnarena export`."""
    also = " (the card's \"usage\" also holds JavaScript)" if "javascript" in card["usage"] else ""
    return [f"run it in Python, beside the model and its card{also}:",
            *("    " + line for line in card["usage"]["python"].splitlines())]


def _export_pytorch(run_dir: Path, output: Path | None, fmt: str) -> Exported:
    from .export.torchscript import card_path_of, export_pytorch

    path, card = export_pytorch(run_dir, output, fmt)
    diffs = ", ".join(f"{d:.1e} at batch {n}" for n, d in card["check"]["max_abs_diff"].items())
    return Exported(path, [f"wrote {path} and {card_path_of(path)}",
                           f"check passed: load with {card['load']}; logits match the run's model (max difference "
                           f"{diffs})"])


def _export_web(run_dir: Path, output: Path | None, timing: float) -> Exported:
    from .export.web import export_web

    folder, card = export_web(run_dir, output, timing)
    web = card["web"]
    check = web["browser_check"]
    lines = [f"wrote {folder}: index.html, the model in ONNX, its card and ONNX Runtime Web; serve the folder "
             f"from any static host, e.g. python -m http.server -d {folder}",
             f"test accuracy {100 * web['test_accuracy_onnxruntime']:.2f}% on {web['test_images']} images (ONNX "
             f"Runtime, the same model file)"]
    if isinstance(check, dict):
        speed = check["images_per_second"]
        lines.append(f"checked in {check['browser']}: the page's top-1 matches ONNX Runtime's on "
                     f"{100 * check['top1_agreement_with_onnxruntime']:.1f}% of {check['images']} test images; "
                     f"{speed['1']:,.0f} images/s at batch 1, {speed['64']:,.0f} at batch 64 in the browser")
    else:
        lines.append(f"browser check {check}")
    return Exported(folder, [*lines, *_how_to_run(card)])


def _export_openvino(run_dir: Path, output: Path | None, timing: float) -> Exported:
    from .export.openvino import card_path_of, export_openvino

    xml, card = export_openvino(run_dir, output, timing)
    acc, speed, check = card["accuracy"], card["images_per_second"], card["check"]
    diffs = ", ".join(f"{d:.1e} at batch {n}" for n, d in check["max_abs_diff"].items())
    lines = [f"wrote {xml}, {xml.with_suffix('.bin')} and {card_path_of(xml)}",
             f"check passed: {check['runtime']} logits match PyTorch within {check['tolerance']:.0e} (max difference "
             f"{diffs})",
             f"test accuracy: OpenVINO {acc['openvino']:.4f}, ONNX Runtime {acc['onnxruntime']:.4f} on "
             f"{acc['test_images']} images",
             *(f"batch {b:>2}: OpenVINO {speed['openvino'][b]:,.0f} images/s, ONNX Runtime "
               f"{speed['onnxruntime'][b]:,.0f}" for b in speed["openvino"])]
    return Exported(xml, [*lines, *_how_to_run(card)])


def _export_tflite(run_dir: Path, output: Path | None, int8: bool, max_drop: float, calibration: int,
                   timing: float) -> Exported:
    from .export.tflite import card_path_of, export_tflite

    path, card = export_tflite(run_dir, output, int8=int8, max_drop=max_drop, calibration=calibration,
                               seconds=timing)
    acc, speed, check = card["accuracy"], card["images_per_second"], card["check"]
    diffs = ", ".join(f"{d:.1e} at batch {n}" for n, d in check["max_abs_diff"].items())
    lines = [f"wrote {path} ({card['precision']}, {card['file_bytes'] / 1e6:.2f} MB, one image per call) and "
             f"{card_path_of(path)}",
             f"check passed: {check['runtime']}: float logits match PyTorch within {check['tolerance']:.0e} (max "
             f"difference {diffs})",
             f"test accuracy: float {acc['float']:.4f}" + (f", int8 {acc['int8']:.4f} ({acc['drop_points']:+.2f} "
                                                          f"points lost, at most {acc['max_drop_points']:g})"
                                                          if "int8" in acc else "")
             + f" on {acc['test_images']} images",
             *(f"batch {b:>2}: " + ", ".join(f"{name} {rates[b]:,.0f} images/s" for name, rates in speed.items())
               for b in next(iter(speed.values())))]
    return Exported(path, [*lines, *_how_to_run(card)])


def _export_coreml(run_dir: Path, output: Path | None) -> Exported:
    from .export.coreml import card_path_of, export_coreml

    path, card = export_coreml(run_dir, output)
    check = card["check"]
    return Exported(path, [f"wrote {path} (a Core ML ML Program) and {card_path_of(path)}",
                           f"spec checked: image input {check['input_size'][1]}x{check['input_size'][0]} "
                           f"{check['color_space']}, outputs {' and '.join(check['outputs'])}, "
                           f"{len(check['class_labels'])} class labels as the run's; not run: {check['why_not_run']}",
                           *_how_to_run(card)])


def _export_int8(run_dir: Path, output: Path | None, exporter: str, opset: int, max_drop: float,
                 calibration: int, timing: float) -> Exported:
    from .export.onnx import export_onnx
    from .export.quantize import INT8_FILE, quantize_run

    path = Path(output) if output else run_dir / INT8_FILE
    with tempfile.TemporaryDirectory(prefix="cnnarena-export-") as tmp:  # the float model is a step, not a result
        result = export_onnx(run_dir, Path(tmp) / "model.onnx", exporter=exporter, opset=opset)
        card = quantize_run(run_dir, result.onnx_path, path, max_drop=max_drop, calibration=calibration,
                            speed_seconds=timing)
    acc, speed, size = card["accuracy"], card["images_per_second"], card["file_bytes"]
    lines = [f"wrote {path} (int8, {size['int8'] / 1e6:.2f} MB; float {size['float'] / 1e6:.2f} MB)",
             f"test accuracy: int8 {acc['int8']:.4f}, float {acc['float']:.4f} ({acc['drop_points']:+.2f} points "
             f"lost, at most {acc['max_drop_points']:g}) on {acc['test_images']} images"]
    stem = card["quantization"]["stem"]
    if stem["measured"]:
        lines.append(f"first convolution: kept in {'float' if stem['float'] else 'int8'}, the faster of the two")
    threads = card["intra_op_threads"]
    for b in speed["int8"]:
        lines.append(f"batch {b:>2}: int8 {speed['int8'][b]:,.0f} images/s ({_threads(threads['int8'][b])}), float "
                     f"{speed['float'][b]:,.0f} ({_threads(threads['float'][b])}): {card['speedup'][b]:.2f}x "
                     f"({card['speedup_default_threads'][b]:.2f}x both on ONNX Runtime's default threads)")
    return Exported(path, [*lines, *_how_to_run(card)])


def _threads(count: int) -> str:
    return "default threads" if count == 0 else f"{count} thread" + ("s" if count > 1 else "")


SERVE_DEFAULTS = {"backend": "onnx", "max_batch": 32, "max_wait_ms": 2.0, "max_body_mb": 10.0,
                  "max_pixels": 40_000_000, "max_files": 16, "top_k": 5, "body_timeout": 15.0, "head_timeout": 10.0,
                  "cors": None, "tls_cert": None, "tls_key": None}


def serve(run_dir: Path, *, host: str = "127.0.0.1", port: int = 8000, max_connections: int = 64,
          log_level: str = "info", **options: Any) -> None:
    """Serve the run's model over HTTP in this process until Ctrl-C (the CLI's `serve`)."""
    from .serve.address import check_listen, check_log_level, check_tls, parse_origins

    settings = {**SERVE_DEFAULTS, **options}
    log_level = check_log_level(log_level)
    origins = parse_origins(settings["cors"])
    tls = check_tls(settings["tls_cert"], settings["tls_key"])
    rundir.check_run(run_dir)
    check_listen(host, port)  # before the model loads (and may be exported): uvicorn would only log and exit 3
    import uvicorn

    from .serve.app import create_app

    web = create_app(run_dir, backend=settings["backend"], max_batch=settings["max_batch"],
                     max_wait_ms=settings["max_wait_ms"], max_body_bytes=int(settings["max_body_mb"] * 1024 * 1024),
                     max_pixels=settings["max_pixels"], max_files=settings["max_files"], top_k=settings["top_k"],
                     body_timeout_s=settings["body_timeout"], max_in_flight=max_connections, cors_origins=origins)
    import sys

    scheme = "https" if tls else "http"
    print(f"serving {run_dir} with {settings['backend']} at {scheme}://{host}:{port}/ (Ctrl+C stops)",
          file=sys.stderr)
    from .serve.protocol import HEADER_BYTES, protocol_with

    certificate = {"ssl_certfile": str(settings["tls_cert"]), "ssl_keyfile": str(settings["tls_key"])} if tls else {}
    uvicorn.run(web, host=host, port=port, log_level=log_level, access_log=False, http=protocol_with(
        settings["head_timeout"]), timeout_keep_alive=5, h11_max_incomplete_event_size=HEADER_BYTES, **certificate)


def serve_in_background(run_dir: Path, host: str = "127.0.0.1", **options: Any):
    """Start `cnnarena serve` in a child process on a free port; returns it once it answers (.url, .stop())."""
    from .serve.launch import ServerProcess

    rundir.check_run(run_dir)
    unknown = set(options) - set(SERVE_DEFAULTS) - {"max_connections", "log_level"}
    if unknown:
        raise TypeError(f"serve() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    args = [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    return ServerProcess(Path(run_dir), *args, host=host).start()
