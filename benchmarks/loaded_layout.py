"""Does a loaded model predict faster with its conv weights channels-last (as `load_model` leaves it) than NCHW?

    python -m benchmarks.loaded_layout RUN_DIR [RUN_DIR ...] [--rounds 4]

For each finished run: `load_model`, then `predict_logits` over 10,000 random images at the run's size (batch
1,024, flip TTA, as `cnnarena evaluate` runs it) and `measure_speed` at batch 1 (the report's latency), in
interleaved rounds NCHW / channels-last, so load from elsewhere hits both. Prints and writes the medians and their
ratio to benchmarks/results/loaded_layout.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def time_layouts(run_dir: Path, rounds: int, images: int = 10_000) -> dict:
    from cnnarena.evaluate.inference import measure_speed, predict_logits
    from cnnarena.models.artefacts import load_model

    model = load_model(run_dir)
    x = torch.randint(0, 256, (images, model.meta.in_chans, *model.meta.data_size), dtype=torch.uint8)
    seconds: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    latency: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for k in range(rounds):
        for name in (LAYOUTS if k % 2 == 0 else reversed(LAYOUTS)):
            model.to(memory_format=LAYOUTS[name])
            t0 = time.perf_counter()
            predict_logits(model, x, batch_size=1024, tta=True)
            seconds[name].append(time.perf_counter() - t0)
            latency[name].append(measure_speed(model, batch_size=1, seconds=1.0)["latency_ms"])
    median = {name: round(statistics.median(v), 3) for name, v in seconds.items()}
    median_b1 = {name: round(statistics.median(v), 3) for name, v in latency.items()}
    return {"run": str(run_dir), "model": model.meta.name, "size": list(model.meta.data_size),
            "predict_seconds": median, "predict_rounds": seconds,
            "nchw_over_channels_last": round(median["nchw"] / median["channels_last"], 2),
            "latency_ms_b1": median_b1,
            "b1_nchw_over_channels_last": round(median_b1["nchw"] / median_b1["channels_last"], 2)}


def main() -> None:
    from benchmarks import write_result

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "loaded_layout.json")
    args = p.parse_args()
    rows = [time_layouts(run, args.rounds) for run in args.runs]
    write_result({"what": f"predict_logits on 10,000 images (batch 1,024, flip TTA) and batch-1 latency of a "
                          f"loaded model, NCHW against channels-last, {args.rounds} interleaved rounds; medians",
                  "threads": torch.get_num_threads(), "rows": rows}, args.out)


if __name__ == "__main__":
    from benchmarks import opt_in

    opt_in()
    main()
