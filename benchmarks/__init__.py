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


def machine() -> str:
    """The CPU's model name with its family and model numbers (a VM may name only "AMD EPYC", which covers several
    generations), the vector extensions int8, bf16 and float kernels pick between, and the logical CPUs: the figures
    of one session's machine are not another's (these VMs change CPU between sessions)."""
    import os
    import platform
    from pathlib import Path

    name, flags, numbers = platform.processor() or platform.machine(), set(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            elif key.strip() in ("cpu family", "model"):
                numbers.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16")
    isa = [f for f in wanted if f in flags]
    if len(numbers) == 2:
        name += f" (family {numbers['cpu family']}, model {numbers['model']})"
    return f"{name}, {os.cpu_count()} logical CPUs" + (f" ({' '.join(isa)})" if isa else "")


def write_result(result: dict, out) -> None:
    """A benchmark's figures, with the machine and the date, to its JSON file under benchmarks/results (and shown)."""
    import json
    import time
    from pathlib import Path

    result = {**result, "machine": machine(),
              "date": time.strftime("%Y-%m-%d")}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
