"""Int8 vs float ONNX: test accuracy and images/s at batch 1 and 64, for simple-2conv, `fast` and EfficientNet-Lite0
trained on Fashion-MNIST, through `cnnarena export RUN --int8` itself (its card holds the figures).

  python -m benchmarks.int8_export                 # trains the three runs first: ~6 minutes on a 2-core CPU
  python -m benchmarks.int8_export --runs DIR ...  # or quantize finished runs

Each run trains with the CLI (simple-2conv 3 epochs, fast 3 epochs, Lite0 for a 3-minute budget at the 48 px
cnnarena picks for 28 px images); the export times each model for 8 s at each batch size and thread setting (ONNX
Runtime's default and one thread), in alternation, three rounds, best round kept; `speedup` compares each model at
its faster setting, `speedup_default_threads` both at the default.
Goal (issue 21): int8 at least 1.5x the float images/s with at most 0.5 points lost, for the custom CNNs.
Results: benchmarks/results/int8_export.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import write_result

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "simple-2conv": ["--epochs", "3"],
    "fast": ["--epochs", "3"],
    "efficientnet_lite0": ["--budget", "3m"],
}
WORK = Path(tempfile.gettempdir()) / "cnnarena-int8-bench"  # where the runs train; int8_node_costs reuses them
TIMING_SECONDS = 8  # per model, batch size and thread setting, longer than the CLI's default: batch-1 rates are noisy


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cnnarena.cli", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", type=Path, help="finished runs to quantize instead of training")
    parser.add_argument("--work", type=Path, default=WORK,
                        help="where the runs train (finished ones are reused)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8_export.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnnarena-int8-bench-") as tmp:
        runs = args.runs or []
        if not runs:
            for model, recipe in RECIPES.items():
                run = args.work / model
                cli("train", "fashion-mnist", "--model", model, *recipe, "--no-tensorboard", "--out", str(run))
                runs.append(run)
        rows = []
        for run in runs:
            out = Path(tmp) / f"{run.name}.int8.onnx"
            done = subprocess.run([sys.executable, "-m", "cnnarena.cli", "export", str(run), "--int8", "--max-drop",
                                   "100", "--timing", str(TIMING_SECONDS), "--output", str(out)],
                                  capture_output=True, text=True)  # figures, whatever
            print(done.stdout + done.stderr)
            if done.returncode != 0:  # recorded, not hidden: the quantizer cannot handle every graph
                rows.append({"model": run.name, "error": done.stderr.strip().splitlines()[-1]})
                continue
            card = json.loads(out.with_name(out.stem + ".card.json").read_text())
            acc, speed = card["accuracy"], card["images_per_second"]
            rows.append({"model": card["model"], "format": card["quantization"]["format"],
                         "float_stem": card["quantization"]["stem"]["float"],
                         "stem_candidates": card["quantization"]["stem"]["measured"],
                         "test_images": acc["test_images"],
                         "accuracy_float": acc["float"], "accuracy_int8": acc["int8"],
                         "points_lost": acc["drop_points"], "images_per_second": speed,
                         "intra_op_threads": card["intra_op_threads"],
                         "images_per_second_by_threads": card["images_per_second_by_threads"],
                         "speedup": card["speedup"], "speedup_default_threads": card["speedup_default_threads"],
                         "file_mb": {k: round(v / 1e6, 3) for k, v in card["file_bytes"].items()},
                         "meets_goal": acc["drop_points"] <= 0.5 and min(card["speedup"].values()) >= 1.5})
    write_result({"what": "cnnarena export RUN --int8 on Fashion-MNIST runs", "recipes": RECIPES, "rows": rows},
                 args.out)


if __name__ == "__main__":
    main()
