"""The precision a training step runs in: bfloat16 autocast where the hardware runs it natively and it is faster.

The rule for --amp's default (None), from benchmarks/bf16_cpu.py:
- CUDA: on.
- A CPU with native bf16 instructions (AVX512-BF16 or AMX: AMD Zen 4 and later, Intel Cooper Lake, Sapphire
  Rapids and later): on for custom CNNs, whose dense convolutions oneDNN runs 1.4-1.6x faster a step in bf16
  than in float32 (even against the fused float32 kernels of models/fused_block.py). Off for pretrained
  backbones: EfficientNet-Lite0 (depthwise convolutions) stepped 0.74-0.83x as fast.
- Any other CPU: off. Without the instructions bf16 is emulated, and slower.
Weights, the optimizer and everything saved stay float32; only the step's activations are bf16.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch


def native_cpu_bf16() -> bool:
    """Whether this CPU has bf16 instructions oneDNN uses (PyTorch's own cpuinfo probes)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def uses_bf16(device: torch.device, amp: bool | None, family: str, native: bool | None = None) -> bool:
    """--amp when given; otherwise the default rule above. native: the CPU's bf16 support (probed when None)."""
    if amp is not None:
        return amp
    if device.type == "cuda":
        return True
    if device.type != "cpu" or family != "custom":
        return False
    return native_cpu_bf16() if native is None else native


def autocast_for(device: torch.device, bf16: bool) -> Callable[[], AbstractContextManager]:
    """A factory of the context each forward pass runs in."""
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext


def precision_name(bf16: bool) -> str:
    """How metrics.json and the report name it."""
    return "bf16 autocast" if bf16 else "float32"
