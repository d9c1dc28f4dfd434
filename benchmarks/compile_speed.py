"""Does `--compile` (torch.compile) pay for itself here? Eager vs compiled cnnarena training runs.

    python benchmarks/compile_speed.py [--models simple-2conv,fast] [--fraction 0.25] [--epochs 3]

Each model is trained twice through train_run on the same Fashion-MNIST subset, once eager and once with
`compile=True`; everything else equal. Epoch 1 of the compiled run includes compiling. Printed: images/s
of the later epochs (steady state), the compile overhead (epoch-1 time minus a steady epoch), and how many
epochs of this size it takes to pay the overhead back. Written to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path


def one_run(model: str, compile_: bool, fraction: float, epochs: int, tmp: Path) -> dict:
    from cnnarena.config import build_config
    from cnnarena.run import train_run

    cfg = build_config(None, {"data": "fashion-mnist", "model": model, "fraction": fraction, "epochs": epochs,
                              "compile": compile_, "tta": False})
    run = tmp / f"{model}-{'compiled' if compile_ else 'eager'}"
    metrics = train_run(cfg, run)
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return {"epoch_seconds": [r["epoch_seconds"] for r in rows],
            "steady_images_per_second": statistics.median(r["images_per_second"] for r in rows[1:]),
            "test_accuracy": metrics["test_accuracy"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="simple-2conv,fast")
    p.add_argument("--fraction", type=float, default=0.25, help="share of the training split per epoch")
    p.add_argument("--epochs", type=int, default=3, help="at least 2: epoch 1 holds the compile")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/compile_speed.json"))
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="cnnarena-compile-") as tmp:
        for model in args.models.split(","):
            eager = one_run(model, False, args.fraction, args.epochs, Path(tmp))
            compiled = one_run(model, True, args.fraction, args.epochs, Path(tmp))
            steady = statistics.median(compiled["epoch_seconds"][1:])
            overhead = compiled["epoch_seconds"][0] - steady
            gain = statistics.median(eager["epoch_seconds"][1:]) - steady  # seconds saved per epoch
            results[model] = {"eager": eager, "compiled": compiled,
                              "speedup": round(compiled["steady_images_per_second"]
                                               / eager["steady_images_per_second"], 3),
                              "compile_overhead_seconds": round(overhead, 1),
                              "epochs_to_pay_back": round(overhead / gain, 1) if gain > 0 else None}
    print(f"\n{'model':<14}{'eager img/s':>12}{'compiled img/s':>16}{'speed-up':>10}{'compile s':>11}"
          f"{'pays back after':>17}")
    for model, r in results.items():
        back = f"{r['epochs_to_pay_back']} epochs" if r["epochs_to_pay_back"] is not None else "never"
        print(f"{model:<14}{r['eager']['steady_images_per_second']:>12,.0f}"
              f"{r['compiled']['steady_images_per_second']:>16,.0f}{r['speedup']:>9.2f}x"
              f"{r['compile_overhead_seconds']:>11.1f}{back:>17}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
                                    "fraction": args.fraction, "epochs": args.epochs, "models": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from benchmarks import opt_in

    opt_in()
    main()
