"""Does adding 1-px shifts to the mirror TTA pay for a model trained with --augment translate?

    python -m benchmarks.tta_shift RUN_DIR [RUN_DIR ...] [--shift 1]

For each finished run, the validation and the test accuracy of its model with the mirror TTA alone (2 views) and
with the shifts added (`predict_logits(..., tta=True, shift=N)`: 10 views). The validation split decides whether
the shifts are worth their cost (they were chosen on it); the test split is shown beside it. Figures go to
benchmarks/results/tta_shift.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(run_dir: Path, shift: int) -> dict:
    from cnnarena.config import load_saved
    from cnnarena.data.sources import load_data
    from cnnarena.data.split import load_manifest
    from cnnarena.evaluate.inference import predict_logits
    from cnnarena.models.artefacts import load_model

    model = load_model(run_dir)
    split = load_manifest(run_dir / "split.json", load_data(load_saved(run_dir)))
    row: dict = {"run": str(run_dir), "model": model.meta.name}
    for part in ("val", "test"):
        images = getattr(split, part)
        for name, views in (("mirror", 0), ("mirror+shifts", shift)):
            t0 = time.perf_counter()
            logits = predict_logits(model, images.images, tta=True, shift=views)
            row[f"{part}_{name}"] = round((logits.argmax(1) == images.labels).float().mean().item(), 4)
            row[f"{part}_{name}_seconds"] = round(time.perf_counter() - t0, 2)
        row[f"{part}_gain_points"] = round(100 * (row[f"{part}_mirror+shifts"] - row[f"{part}_mirror"]), 2)
    print(row, flush=True)
    return row


def main() -> None:
    from benchmarks import write_result

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    p.add_argument("--shift", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tta_shift.json")
    args = p.parse_args()
    rows = [measure(run, args.shift) for run in args.runs]
    write_result({"what": f"accuracy with the mirror TTA, and with {args.shift}-px shifts added (10 views)",
                  "rows": rows}, args.out)


if __name__ == "__main__":
    from benchmarks import opt_in

    opt_in()
    main()
