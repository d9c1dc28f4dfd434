"""Class imbalance: does `--class-weights auto` (or `--sampler balanced`) recover the small class?

  python -m benchmarks.class_weights             # Fashion-MNIST, 20,000 training images, class 0 cut to a tenth
  python -m benchmarks.class_weights --epochs 2  # a quicker pass

The imbalanced set is written once as a class folder (28x28 PNGs of real Fashion-MNIST images: 2,000 per class,
T-shirt/top cut to 200). Every row trains simple-2conv with the same recipe, split (one split.json) and seed; only
the imbalance option differs. Reports test accuracy, macro recall (= balanced accuracy here) and the small class's
recall; figures go to benchmarks/results/class_weights.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"plain": {}, "class-weights auto": {"class_weights": "auto"}, "sampler balanced": {"sampler": "balanced"}}


def build(folder: Path, per_class: int = 2000, small: int = 200) -> str:
    import numpy as np
    from PIL import Image

    from cnnarena.data.sources import load_source

    source = load_source("fashion-mnist")
    images, labels = source.pool.images[:, 0].numpy(), source.pool.labels.numpy()
    for c, name in enumerate(source.classes):
        target = folder / f"{c}-{name.replace('/', '-')}"
        target.mkdir(parents=True, exist_ok=True)
        for k in np.flatnonzero(labels == c)[: small if c == 0 else per_class]:
            Image.fromarray(images[k]).save(target / f"{k}.png")
    return f"0-{source.classes[0].replace('/', '-')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cnnarena-imbalance-bench")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "class_weights.json")
    args = parser.parse_args()
    from cnnarena.config import build_config
    from cnnarena.run import train_run

    folder = args.work / "fmnist-imbalanced"
    small = build(folder) if not folder.exists() else next(p.name for p in folder.iterdir() if p.name[0] == "0")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        split = None
        for name, options in ROWS.items():
            values = {"data": str(folder), "image_size": 28, "model": "simple-2conv", "epochs": args.epochs,
                      "seed": 0, **({"split": split} if split else {}), **options}
            t0 = time.perf_counter()
            run_dir = Path(tmp) / name.replace(" ", "-")
            metrics = train_run(build_config(None, values), run_dir)
            split = split or str(run_dir / "split.json")  # every row on the first row's split
            rows.append({"row": name, "test_accuracy": round(metrics["test_accuracy"], 4),
                         "macro_recall": round(metrics["macro_recall"], 4),
                         "balanced_accuracy": round(metrics["balanced_accuracy"], 4),
                         "small_class_recall": round(metrics["per_class_recall"][small], 4),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "data": "Fashion-MNIST, 2,000 per class, class 0 cut to 200", "epochs": args.epochs, "rows": rows}
    print(json.dumps(result, indent=1))
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    from benchmarks import opt_in

    opt_in()
    main()
