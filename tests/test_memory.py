"""keep_freed_memory(): with the malloc setting the CLI opts into (runtime.configure(tune_malloc=True)), fit() on a
CPU stops paying page faults for the activations it re-allocates each step; without it the library leaves glibc
alone.

Each case runs in a fresh process, since the setting is process-wide.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # a fresh process for each case; page faults counted

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import resource, sys, torch
import cnnarena.memory as memory
from cnnarena import runtime
from cnnarena.config import build_config
from cnnarena.data.dataset import ImageSet
from cnnarena.data.loader import BatchLoader
from cnnarena.models.registry import create_model
from cnnarena.train.callbacks import Callback
from cnnarena.train.loop import fit

if sys.argv[1] == "check":
    print(memory.keep_freed_memory(), 0)
    raise SystemExit
torch.set_num_threads(1)
n, classes = 256 * 60, [str(i) for i in range(10)]
data = ImageSet(torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (n,)),
                classes, [str(i) for i in range(n)])
cfg = build_config(None, {"model": "simple-2conv", "batch_size": 256, "epochs": 1, "device": "cpu"}).train
model = create_model("simple-2conv", num_classes=10, in_chans=1, data_size=(28, 28), classes=classes)
faults = {}

class CountFaults(Callback):  # called every 10 batches
    def on_batch_end(self, state, batch, num_batches):
        faults[batch] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

train = BatchLoader(data, 256, shuffle=True, channels_last=True)
if sys.argv[1] == "tuned":
    runtime.configure(tune_malloc=True)  # where fit() used to tune it: after the model exists
fit(model, train, BatchLoader(data, 1024), cfg, callbacks=[CountFaults()])
print(memory._applied, (faults[60] - faults[20]) / 40)  # steady state: steps 21-60
"""


def _start(mode: str, **env: str) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    return subprocess.Popen([sys.executable, "-c", PROBE, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env={**base, "PYTHONPATH": str(ROOT), **env})


def _result(proc: subprocess.Popen) -> tuple[str, float]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    applied, faults = out.split()
    return applied, float(faults)


def test_training_steps_reuse_freed_memory_without_page_faults():
    plain, tuned = _start("plain"), _start("tuned")  # side by side: the counts do not depend on timing
    (plain_applied, plain_faults), (applied, kept_faults) = _result(plain), _result(tuned)
    assert applied == "True" and plain_applied == "None"  # the library alone did not touch malloc
    # a batch-256 step allocates ~100 MB of activations and gradients: plain glibc faulted 6,000-10,000
    # pages back in per step here, the tuned heap 0-80
    assert kept_faults < 200 and plain_faults > 1000, (plain_faults, kept_faults)


def test_a_users_own_malloc_settings_win():
    applied, _ = _result(_start("check", MALLOC_ARENA_MAX_="2"))
    assert applied == "False"
