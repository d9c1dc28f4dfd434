"""Is a training step faster in bf16 autocast than in float32 on this CPU, model by model?

    python -m benchmarks.bf16_cpu [--rounds 4] [--steps 10]

For each model (the custom presets at Fashion-MNIST's 28x28 grayscale, batch 256; EfficientNet-Lite0 from random
weights at 112 and 224 px, batch 64 and 32): SGD steps (forward, loss, backward, update) on channels-last batches,
as cnnarena trains, in interleaved rounds float32 / bf16 so load from elsewhere hits both. The float32 steps of
the custom CNNs take the fused BatchNorm-pool-ReLU kernels (models/fused_block.py) where they apply, as training
does; bf16 runs the plain layers. Prints and writes the medians and their ratio to benchmarks/results/bf16_cpu.json.
This is the measurement behind train/precision.py's default.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CASES = (("simple-2conv", 28, 1, 256), ("fast", 28, 1, 256), ("fast-large", 28, 1, 256),
         ("efficientnet_lite0", 112, 3, 64), ("efficientnet_lite0", 224, 3, 32))


def step_seconds(name: str, size: int, chans: int, batch: int, rounds: int, steps: int) -> dict:
    from cnnarena.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=chans, data_size=(size, size),
                         classes=[str(k) for k in range(10)], pretrained=False)
    model.train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, chans, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times: dict[str, list[float]] = {"float32": [], "bf16": []}
    for k in range(rounds):
        for precision in (times if k % 2 == 0 else reversed(times)):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                for i in range(steps + 2):  # two warm-up steps a round
                    if i == 2:
                        t0 = time.perf_counter()
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            times[precision].append((time.perf_counter() - t0) / steps)
    median = {p: round(1000 * statistics.median(v), 1) for p, v in times.items()}
    return {"model": name, "size": size, "batch": batch, "ms_per_step": median,
            "float32_over_bf16": round(median["float32"] / median["bf16"], 2)}


def main() -> None:
    from benchmarks import write_result
    from cnnarena.train.precision import native_cpu_bf16

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bf16_cpu.json")
    args = p.parse_args()
    rows = []
    for case in CASES:
        rows.append(step_seconds(*case, rounds=args.rounds, steps=args.steps))
        print(rows[-1], flush=True)
    write_result({"what": f"one SGD training step, float32 against bf16 autocast, channels-last, {args.rounds} "
                          f"interleaved rounds of {args.steps} steps; medians",
                  "native_cpu_bf16": native_cpu_bf16(), "threads": torch.get_num_threads(),
                  "rows": rows}, args.out)


if __name__ == "__main__":
    from benchmarks import opt_in

    opt_in()
    main()
