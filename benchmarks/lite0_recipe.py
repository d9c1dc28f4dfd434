"""Which phase-2 schedule, learning rate and batch should EfficientNet-Lite0's fine-tune use on a CPU?

  python -m benchmarks.lite0_recipe                   # every variant below, one after another (~35 min, 2 cores)
  python -m benchmarks.lite0_recipe --from DIR        # summarise run directories DIR/<variant> made earlier

Each variant is one `cnnarena train fashion-mnist --model efficientnet_lite0` as a whole process on a quarter of the
training set (`--fraction 0.25`: 12,000 images, the full 12,000 validation and 10,000 test images), same split and
seed, 48 px, 2 epochs of the head on cached features then 3 of the whole network. What each variant sets is on
top of the recipe as it was before this comparison (Adam 1e-3, batch 64, phase 2 at 0.1x the LR, constant).
Figures go to benchmarks/results/lite0_recipe.json; `PRETRAINED` in schema.py is chosen from them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import machine

ROOT = Path(__file__).resolve().parents[1]
BEFORE = ["--schedule", "constant", "--finetune-lr-scale", "0.1"]  # the recipe the variants start from
VARIANTS = {
    "A_default": [],
    "B_cosine": ["--schedule", "cosine"],
    "C_cosine_lr3": ["--schedule", "cosine", "--finetune-lr-scale", "0.3"],
    "D_cosine_lr3_b128": ["--schedule", "cosine", "--finetune-lr-scale", "0.3", "--batch-size", "128"],
    "E_cosine_lr10": ["--schedule", "cosine", "--finetune-lr-scale", "1.0"],
    "F_cosine_lr3_ls": ["--schedule", "cosine", "--finetune-lr-scale", "0.3", "--label-smoothing", "0.1"],
    "G_cosine_lr5": ["--schedule", "cosine", "--finetune-lr-scale", "0.5"],
}


def summarise(name: str, out: Path, wall: float | None) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines() if line.strip()]
    return {"variant": name, "options": VARIANTS[name], "test_accuracy": m["test_accuracy"],
            "val_accuracy_by_epoch": [round(r["val_accuracy"], 4) for r in history],
            "phase_2_images_per_second": [round(r["images_per_second"]) for r in history if r["phase"] == "fine-tune"],
            "train_seconds": m["train_seconds"], "wall_seconds": None if wall is None else round(wall, 1)}


def run(name: str, work: Path) -> dict:
    out = work / name
    cmd = [sys.executable, "-m", "cnnarena", "train", "fashion-mnist", "--model", "efficientnet_lite0",
           "--fraction", "0.25", "--out", str(out), *BEFORE, *VARIANTS[name]]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return summarise(name, out, time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--from", dest="done", type=Path, help="summarise DIR/<variant> run directories instead")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            rows.append(summarise(name, args.done / name, None) if args.done else run(name, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    result = {"what": __doc__.splitlines()[0], "machine": machine(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    path = ROOT / "benchmarks" / "results" / "lite0_recipe.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
