"""Do the fused BatchNorm -> max-pool -> ReLU kernels (cnnarena/models/fused_block.py) pay in a training step?

    python -m benchmarks.fused_kernels [--batches 32,256] [--rounds 8] [--seconds 3]

cnnarena's training path (simple-2conv on Fashion-MNIST, throughput.CnnarenaTrain, the thread tuner off) twice in
one process: its network as built (the fused kernels), and the same layers in a plain nn.Sequential (PyTorch's
own BatchNorm, max-pool and ReLU). The two run in interleaved rounds (A B, B A, ...), so load from elsewhere hits
both; printed: the median images/s of each, the rounds, and the ratio.
Measured 2026-11-30 on the 2-core AMD EPYC (8 rounds): batch 32 1,881 -> 2,164 img/s (1.15x), batch 256
2,544 -> 2,880 img/s (1.13x, 6 rounds); again with --rounds 6 --seconds 2: batch 32 1,946 -> 2,071 (1.06x),
batch 256 2,794 -> 3,163 (1.13x). Batch 32's gain moves with the machine's noise: 6-15%.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from torch import nn

from benchmarks.throughput import CnnarenaTrain
from cnnarena.data.sources import load_source
from cnnarena.models.fused_block import library


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="32,256", help="comma-separated batch sizes")
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds per batch size; medians are printed")
    p.add_argument("--seconds", type=float, default=3.0, help="about this long per round and runner")
    args = p.parse_args()
    os.environ["CNNARENA_THREAD_TUNING"] = "0"  # both runners on the same threads throughout
    if library() is None:
        raise SystemExit("error: the fused kernels are not available here (no C compiler, or switched off)")
    pool = load_source("fashion-mnist").pool
    for batch in (int(b) for b in args.batches.split(",")):
        fused = CnnarenaTrain(pool.images, pool.labels, pool.classes, batch, name="fused kernels")
        plain = CnnarenaTrain(pool.images, pool.labels, pool.classes, batch, name="PyTorch's layers")
        plain.model.net = nn.Sequential(*plain.model.net)  # the same layers, run one by one
        seen, seconds = fused.run(max(4, 1000 // batch))  # warm-up, and the step count for a round
        steps = max(4, round(args.seconds * seen / seconds / batch))
        plain.run(steps // 4)
        rates: dict[str, list[float]] = {fused.name: [], plain.name: []}
        for k in range(args.rounds):
            for runner in ((fused, plain) if k % 2 == 0 else (plain, fused)):
                seen, seconds = runner.run(steps)
                rates[runner.name].append(seen / seconds)
        medians = {name: statistics.median(r) for name, r in rates.items()}
        for name, r in rates.items():
            print(f"b={batch:<4} {name:<17} {medians[name]:>7,.0f} img/s   rounds: "
                  + " ".join(f"{x:,.0f}" for x in r), flush=True)
        print(f"b={batch:<4} fused / plain     {medians[fused.name] / medians[plain.name]:>7.2f}x   "
              f"({steps} steps a round, {torch.get_num_threads()} threads)", flush=True)


if __name__ == "__main__":
    from benchmarks import opt_in

    opt_in()
    main()
