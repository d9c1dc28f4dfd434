"""Every export format side by side, in one run: its check, its test accuracy and its images/s at batch 1 and 64,
for simple-2conv, `fast` and EfficientNet-Lite0 trained on Fashion-MNIST, through `cnnarena export` itself (the
figures are the ones its cards hold).

  python -m benchmarks.exports                 # trains the three runs first (as benchmarks.int8_export does)
  python -m benchmarks.exports --runs DIR ...  # or export finished runs

Formats: ONNX float and int8 (ONNX Runtime; both from the int8 export's card, timed in alternation), OpenVINO IR
(OpenVINO's CPU runtime), web (ONNX Runtime Web in headless Chromium, WebAssembly, one thread), TFLite float and int8
(the LiteRT interpreter; both from the int8 export's card) and Core ML (converted and its spec checked: its runtime
runs only on Apple's systems).
Each is timed for --timing seconds per batch size.
Results: benchmarks/results/exports.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import write_result
from benchmarks.int8_export import RECIPES, WORK

ROOT = Path(__file__).resolve().parents[1]


def export(run: Path, out: Path, *args: str) -> dict | str:
    """The card of `cnnarena export RUN *args --output OUT`, or the error line."""
    done = subprocess.run([sys.executable, "-m", "cnnarena.cli", "export", str(run), *args, "--output", str(out)],
                          capture_output=True, text=True)
    print(done.stdout + done.stderr, flush=True)
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1]
    if out.suffix == "":
        card = out / "model.card.json"
    elif out.suffix in (".xml", ".tflite", ".mlpackage"):
        card = out.with_name(out.name + ".card.json")
    else:
        card = out.with_name(out.stem + ".card.json")
    return json.loads(Path(card).read_text())


def rows_of(run: Path, tmp: Path, timing: str) -> list[dict]:
    out = []
    int8 = export(run, tmp / f"{run.name}.int8.onnx", "--int8", "--max-drop", "100", "--timing", timing)
    ov = export(run, tmp / f"{run.name}.xml", "--format", "openvino", "--timing", timing)
    web = export(run, tmp / f"{run.name}-web", "--format", "web", "--timing", timing)
    tflite = export(run, tmp / f"{run.name}.int8.tflite", "--format", "tflite", "--int8", "--max-drop", "100",
                    "--timing", timing)
    coreml = export(run, tmp / f"{run.name}.mlpackage", "--format", "coreml")
    for name, card in (("onnx int8", int8), ("openvino", ov), ("web", web), ("tflite", tflite), ("coreml", coreml)):
        if isinstance(card, str):
            out.append({"model": run.name, "format": name, "error": card})
    if isinstance(int8, dict):
        for fmt in ("float", "int8"):
            out.append({"model": run.name, "format": f"onnx {fmt}", "runtime": "onnxruntime",
                        "check": "logits within 1e-4 of PyTorch" if fmt == "float" else
                        f"{int8['accuracy']['drop_points']:+.2f} points against float",
                        "test_accuracy": int8["accuracy"][fmt], "images_per_second": int8["images_per_second"][fmt]})
    if isinstance(ov, dict):
        out.append({"model": run.name, "format": "openvino", "runtime": ov["check"]["runtime"],
                    "check": f"logits within {max(ov['check']['max_abs_diff'].values()):.1e} of PyTorch",
                    "test_accuracy": ov["accuracy"]["openvino"],
                    "images_per_second": ov["images_per_second"]["openvino"],
                    "onnxruntime_same_run": ov["images_per_second"]["onnxruntime"]})
    if isinstance(web, dict):
        check = web["web"]["browser_check"]
        out.append({"model": run.name, "format": "web", "runtime": web["web"]["runtime"],
                    "check": f"top-1 = ONNX Runtime's on {100 * check['top1_agreement_with_onnxruntime']:.1f}% of "
                             f"{check['images']} test images in {check['browser']}",
                    "test_accuracy": web["web"]["test_accuracy_onnxruntime"],
                    "accuracy_in_browser_on_checked_images": check["accuracy_in_browser"],
                    "images_per_second": check["images_per_second"]})
    if isinstance(tflite, dict):
        acc, check = tflite["accuracy"], tflite["check"]
        for fmt in ("float", "int8"):
            out.append({"model": run.name, "format": f"tflite {fmt}", "runtime": check["runtime"],
                        "check": f"logits within {max(check['max_abs_diff'].values()):.1e} of PyTorch"
                        if fmt == "float" else f"{acc['drop_points']:+.2f} points against float",
                        "test_accuracy": acc[fmt], "images_per_second": tflite["images_per_second"][fmt]})
    if isinstance(coreml, dict):
        check = coreml["check"]
        out.append({"model": run.name, "format": "coreml", "runtime": f"coremltools {coreml['coremltools']} "
                    "(converted only)", "check": f"spec: image input {check['input_size']} {check['color_space']}, "
                    f"{len(check['class_labels'])} class labels; not run ({check['why_not_run']})",
                    "test_accuracy": None, "images_per_second": None})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", type=Path, help="finished runs to export instead of training")
    parser.add_argument("--work", type=Path, default=WORK, help="where the runs train (finished ones are reused)")
    parser.add_argument("--timing", default="4", help="seconds each model is timed per batch size")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "exports.json")
    args = parser.parse_args()
    runs = args.runs or []
    if not runs:
        for model, recipe in RECIPES.items():
            run = args.work / model
            if not (run / "metrics.json").exists():
                subprocess.run([sys.executable, "-m", "cnnarena.cli", "train", "fashion-mnist", "--model", model,
                                *recipe, "--no-tensorboard", "--out", str(run)], check=True)
            runs.append(run)
    with tempfile.TemporaryDirectory(prefix="cnnarena-exports-bench-") as tmp:
        rows = [row for run in runs for row in rows_of(run, Path(tmp), args.timing)]
    write_result({"what": "cnnarena export RUN --format F, Fashion-MNIST runs; images/s at batch 1 and 64",
                  "recipes": RECIPES, "timing_seconds": float(args.timing), "rows": rows}, args.out)


if __name__ == "__main__":
    main()
