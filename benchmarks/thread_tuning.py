"""Does picking the thread count by measurement (cnnarena/train/threads.py) pay, idle and with the CPU busy?

    python benchmarks/thread_tuning.py [--batch 32] [--steps 1000]

cnnarena's training path (simple-2conv on Fashion-MNIST-shaped data, throughput.CnnarenaTrain) on all threads,
with the tuner off and on (CNNARENA_THREAD_TUNING), alternating: idle, with one busy `while True` process
beside it, and idle again. Printed: images/s of each run. Measured 2026-11-24 on 2 cores, batch 32, 300 steps:
idle 2,716-2,859 off vs 2,669-2,758 on; busy 746-789 off vs 1,648-1,775 on; idle again, the first run on one
thread (1,956: the busy choice lasts until the next check, at most 30 s), then 2,706.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

from benchmarks.throughput import CnnarenaTrain


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=1000, help="training steps per measured run")
    args = p.parse_args()
    images = torch.randint(0, 256, (60000, 1, 28, 28), dtype=torch.uint8)
    runner = CnnarenaTrain(images, torch.randint(0, 10, (60000,)), [str(i) for i in range(10)], args.batch)
    runner.run(20)  # warm-up
    for busy in (False, True, False):
        other = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        time.sleep(0.5)
        rates: dict[str, list[int]] = {"off": [], "on": []}
        for _ in range(2):
            for tuning in rates:
                os.environ["CNNARENA_THREAD_TUNING"] = "1" if tuning == "on" else "0"
                seen, seconds = runner.run(args.steps)
                rates[tuning].append(round(seen / seconds))
        print(f"{'busy' if busy else 'idle'} (b={args.batch}, {torch.get_num_threads()} threads): "
              f"tuner off {rates['off']} img/s, on {rates['on']} img/s", flush=True)
        if other is not None:
            other.kill()
            other.wait()


if __name__ == "__main__":
    from benchmarks import opt_in

    opt_in()
    main()
