"""bf16 autocast by default where the hardware runs it natively and it is faster (train/precision.py)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnarena.config import build_config
from cnnarena.run import train_run
from cnnarena.study.methods import model_methods
from cnnarena.train.precision import native_cpu_bf16, precision_name, uses_bf16

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_the_default_is_bf16_for_custom_cnns_on_cpus_with_bf16_instructions_and_on_cuda():
    assert uses_bf16(CPU, None, "custom", native=True)
    assert not uses_bf16(CPU, None, "custom", native=False)  # emulated bf16 is slower
    assert not uses_bf16(CPU, None, "pretrained", native=True)  # depthwise convolutions ran slower in bf16
    assert uses_bf16(CUDA, None, "pretrained", native=False)
    assert not uses_bf16(torch.device("mps"), None, "custom", native=True)
    assert uses_bf16(CPU, True, "pretrained", native=False)  # --amp and --no-amp decide when given
    assert not uses_bf16(CUDA, False, "custom", native=True)


def test_the_probe_agrees_with_the_cpus_flags():
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo (not Linux): no flags to compare the probe with")
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
    assert native_cpu_bf16() == bool(flags & {"avx512_bf16", "amx_tile", "amx_bf16"})


def _row(run: Path, metrics: dict) -> dict:
    return {"run_dir": str(run), "family": metrics["family"], "model": metrics["model"],
            "params": metrics["params_total"], "train_seconds": metrics["train_seconds"]}


def test_a_run_records_its_precision_and_the_methods_say_it(tmp_path):
    cfg = {"data": "digits", "model": "simple-2conv", "epochs": 3, "batch_size": 64, "lr": 2e-3}
    default = train_run(build_config(None, cfg), tmp_path / "default")
    fp32 = train_run(build_config(None, {**cfg, "amp": False}), tmp_path / "fp32")
    forced = train_run(build_config(None, {**cfg, "amp": True}), tmp_path / "bf16")
    assert default["precision"] == precision_name(native_cpu_bf16())  # this machine's default
    assert (fp32["precision"], forced["precision"]) == ("float32", "bf16 autocast")
    assert json.loads((tmp_path / "bf16" / "metrics.json").read_text())["precision"] == "bf16 autocast"
    assert forced["test_accuracy"] > 0.85 and abs(forced["test_accuracy"] - fp32["test_accuracy"]) < 0.05
    said = model_methods(_row(tmp_path / "bf16", forced), None, {})
    assert "in bfloat16 mixed precision (autocast; weights in float32)" in said
    assert "bfloat16" not in model_methods(_row(tmp_path / "fp32", fp32), None, {})
    bf16_weights, fp32_weights = (load_file(tmp_path / d / "model.safetensors") for d in ("bf16", "fp32"))
    assert any(not torch.equal(bf16_weights[k], fp32_weights[k]) for k in fp32_weights), "autocast never ran"
    saved = bf16_weights.values()
    assert {t.dtype for t in saved} <= {torch.float32, torch.int64}  # only the step ran in bf16


def test_bf16_runs_under_deterministic_are_bit_identical(tmp_path):
    cfg = {"data": "digits", "model": "fast", "epochs": 2, "batch_size": 64, "amp": True, "deterministic": True}
    for name in ("a", "b"):
        train_run(build_config(None, cfg), tmp_path / name)
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_lr_range_test_runs_in_the_precision_training_uses():
    from cnnarena.data.dataset import ImageSet
    from cnnarena.data.loader import BatchLoader
    from cnnarena.models.registry import create_model
    from cnnarena.train.config import TrainConfig
    from cnnarena.train.lr_finder import lr_find

    model = create_model("simple-2conv", num_classes=10, in_chans=1, data_size=(8, 8), classes=list("0123456789"))
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    data = ImageSet(images, torch.arange(64) % 10, list("0123456789"), [f"x/{k}" for k in range(64)])
    loader = BatchLoader(data, 16, device=CPU)
    seen = {}
    for amp in (True, False):
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        handle = conv.register_forward_hook(lambda m, i, o, amp=amp: seen.setdefault(amp, o.dtype) and None)
        lr_find(model, loader, TrainConfig(amp=amp), steps=5)  # trains a copy, hook included
        handle.remove()
    assert seen == {True: torch.bfloat16, False: torch.float32}
