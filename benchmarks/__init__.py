"""Timed comparisons, printed as one table and measured side by side in one run (`python -m benchmarks`).

throughput.py        training / inference runners on the PyTorch side and the interleaved scheduler
keras_peer.py        the Keras 3 / TensorFlow peer: its own venv and a worker process spoken to in JSON lines
time_to_accuracy.py  cnnarena's `fast` preset through train_run, test accuracy after every epoch
table.py             targets judged met / missed, and the table (pure functions)
serve_load.py        load test of `cnnarena serve` (a separate script)
"""


def opt_in() -> None:
    """What the `cnnarena` command opts into (cnnarena.runtime), so that benchmarks time what users run:
    malloc and thread tuning (unless CNNARENA_THREAD_TUNING=0), progress lines on stderr."""
    import os

    from cnnarena import runtime

    runtime.configure(tune_malloc=True, tune_threads=os.environ.get("CNNARENA_THREAD_TUNING", "1") != "0",
                      console=True)


def write_result(result: dict, out) -> None:
    """A benchmark's figures, with the machine and the date, to its JSON file under benchmarks/results (and shown)."""
    import json
    import os
    import platform
    import time
    from pathlib import Path

    result = {**result, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d")}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
