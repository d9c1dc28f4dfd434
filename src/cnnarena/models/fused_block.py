"""BatchNorm -> 2x2 max-pool -> ReLU (or BatchNorm -> ReLU) of a custom CNN, trained on a CPU as one fused step.

In a report-style CNN (conv, batchnorm, relu, maxpool; pooled before the ReLU by fast_layers) these three
layers are memory-bound: PyTorch runs them as five full-size passes forward and six backward over the conv's
output, the largest tensor in the network. The C kernels in kernels/bn_pool_relu.c do the same arithmetic in
two passes each way: the batch statistics and then the pooled, normalised, rectified output; backward, the
sums over the one pixel per window that the gradient reaches and then the input gradient. On this 2-core CPU
(AMD EPYC, AVX2), forward + backward of simple-2conv's first block (32 x 32 x 28 x 28) took 1.24-1.30 ms against
PyTorch's 2.37-2.75 ms, its second (32 x 64 x 14 x 14) 0.58-0.60 ms against 1.22-1.35 ms; whole training steps,
interleaved A/B in one process (8 rounds, medians): batch 32 1,881 -> 2,164 img/s (+15%; +6% in a shorter run),
batch 256 2,544 -> 2,880 img/s (+13%). Their sums run in double where PyTorch's float32 path rounds: against
float64, their errors were 100x smaller (tests/test_fused_block.py holds them to at most PyTorch's).

A BatchNorm followed by ReLU with no pool between (fast's stem, fast-large's blocks, which pool before the
BatchNorm) runs the same way without the pool: 7% faster training steps for fast-large at batch 256 (1,484 ->
1,587 img/s, interleaved A/B); fast, with both kinds fused, 7% faster than with neither (2,580 -> 2,759 img/s).

Tried and not kept: computing the first conv (1 input channel) inside the same kernels, so that its output is
never stored, made the step slower (1,951 -> 1,530 img/s at batch 32): per pixel it recomputed the conv five
times in scalar-gathered patches, where oneDNN's conv and weight gradient together cost ~1 ms a step.

They run only where they compute the same thing as the layers: training mode on a CPU, float32 channels_last
activations, affine BatchNorm with running statistics and a momentum, a 2x2 stride-2 max-pool, then ReLU.
Everywhere else (evaluation, export, GPUs, autocast, torch.compile) the layers run as they are. The kernels are
compiled once per machine with the system C compiler (cached under ~/.cache/cnnarena); without one, or with
CNNARENA_FUSED_KERNELS=0, training uses the plain layers.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import nn

SOURCE = Path(__file__).with_name("kernels") / "bn_pool_relu.c"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")
_lib: ctypes.CDLL | None | bool = False  # False: not tried yet; None: not available here


def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; None where they cannot be had (or are switched off)."""
    global _lib
    if _lib is False:
        _lib = None if os.environ.get("CNNARENA_FUSED_KERNELS", "1") == "0" else _load()
    return _lib


def _load() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not platform.system() == "Linux":
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join((compiler, *FLAGS, _cpu_signature())).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("CNNARENA_CACHE", Path.home() / ".cache" / "cnnarena")) / "kernels"
    target = cache / f"bn_pool_relu-{key}.so"
    try:
        if not target.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                built = Path(tmp) / target.name
                subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built), "-lm"], check=True,
                               capture_output=True, timeout=120)
                os.replace(built, target)  # atomic: a concurrent build or a killed one never leaves half a file
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError):
        return None
    _declare(lib)
    return lib


def _cpu_signature() -> str:
    """-march=native code runs only where it was built: the key includes the CPU's model and flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "|".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
    for forward, backward in (("bpr_forward", "bpr_backward"), ("br_forward", "br_backward")):
        getattr(lib, forward).argtypes = [p, i64, i64, i64, i64, i32, f32, p, p, p, p, p, p, p]
        getattr(lib, forward).restype = None
        getattr(lib, backward).argtypes = [p, p, p, i64, i64, i64, i64, i32, p, p, p, p, p, p]
        getattr(lib, backward).restype = None


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


class _BatchNormPoolReLU(torch.autograd.Function):
    """BatchNorm (training) -> 2x2/2 max-pool -> ReLU, or with pool=False BatchNorm -> ReLU."""

    @staticmethod
    def forward(ctx, x, weight, bias, bn: nn.BatchNorm2d, pool: bool):
        lib = library()
        n, c, h, w = x.shape
        oh, ow = (h // 2, w // 2) if pool else (h, w)
        out = torch.empty((n, c, oh, ow), memory_format=torch.channels_last)
        which = torch.empty((n, oh, ow, c), dtype=torch.uint8)
        mean, var, invstd = (x.new_empty(c) for _ in range(3))
        weight_c, bias_c = weight.detach().contiguous(), bias.detach().contiguous()
        kernel = lib.bpr_forward if pool else lib.br_forward
        kernel(_ptr(x), n, h, w, c, torch.get_num_threads(), bn.eps, _ptr(weight_c), _ptr(bias_c), _ptr(out),
               _ptr(which), _ptr(mean), _ptr(var), _ptr(invstd))
        with torch.no_grad():  # running statistics, as BatchNorm2d keeps them (unbiased variance)
            pixels = n * h * w
            bn.running_mean.lerp_(mean, bn.momentum)
            bn.running_var.lerp_(var * (pixels / max(1, pixels - 1)), bn.momentum)
            bn.num_batches_tracked.add_(1)
        ctx.save_for_backward(x, which, weight_c, mean, invstd)
        ctx.pool = pool
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, which, weight, mean, invstd = ctx.saved_tensors
        n, c, h, w = x.shape
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        grad_x = torch.empty_like(x, memory_format=torch.channels_last)
        grad_w, grad_b = x.new_empty(c), x.new_empty(c)
        kernel = library().bpr_backward if ctx.pool else library().br_backward
        kernel(_ptr(grad_out), _ptr(x), _ptr(which), n, h, w, c, torch.get_num_threads(), _ptr(weight), _ptr(mean),
               _ptr(invstd), _ptr(grad_x), _ptr(grad_w), _ptr(grad_b))
        return grad_x, grad_w, grad_b, None, None


def fusable_layers(bn: nn.Module, pool: nn.Module | None, act: nn.Module) -> bool:
    """Whether (bn, pool, act), or (bn, act) with pool None, are layers the kernels compute (their settings)."""
    return (type(bn) is nn.BatchNorm2d and bn.affine and bn.track_running_stats and bn.momentum is not None
            and (pool is None or (type(pool) is nn.MaxPool2d and _pair(pool.kernel_size) == (2, 2)
                                  and _pair(pool.stride) == (2, 2) and _pair(pool.padding) == (0, 0)
                                  and _pair(pool.dilation) == (1, 1) and not pool.ceil_mode
                                  and not pool.return_indices))
            and type(act) is nn.ReLU)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def fused_applies(x: torch.Tensor, bn: nn.BatchNorm2d) -> bool:
    """Whether this call can take the fused path: training on a CPU, float32 channels_last, kernels built."""
    return (bn.training and torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and x.dim() == 4 and x.shape[2] >= 2 and x.shape[3] >= 2
            and x.is_contiguous(memory_format=torch.channels_last) and bn.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and library() is not None)


def batchnorm_pool_relu(x: torch.Tensor, bn: nn.BatchNorm2d, pool: bool = True) -> torch.Tensor:
    return _BatchNormPoolReLU.apply(x, bn.weight, bn.bias, bn, pool)


class FusingSequential(nn.Sequential):
    """nn.Sequential that runs each (BatchNorm2d, MaxPool2d 2x2, ReLU) and each (BatchNorm2d, ReLU) run of its
    layers as one fused step while training on a CPU. The layers stay its children at their own indices:
    parameters, state-dict keys and every other mode are nn.Sequential's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        layers = list(self)
        i = 0
        while i < len(layers):
            bn_pool_relu, bn_relu = layers[i:i + 3], layers[i:i + 2]
            if (len(bn_pool_relu) == 3 and fusable_layers(*bn_pool_relu) and not _has_hooks(bn_pool_relu)
                    and fused_applies(x, layers[i])):
                x = batchnorm_pool_relu(x, layers[i])
                i += 3
            elif (len(bn_relu) == 2 and fusable_layers(bn_relu[0], None, bn_relu[1]) and not _has_hooks(bn_relu)
                  and fused_applies(x, layers[i])):
                x = batchnorm_pool_relu(x, layers[i], pool=False)
                i += 2
            else:
                x = layers[i](x)
                i += 1
        return x


def _has_hooks(layers: list[nn.Module]) -> bool:
    """A hook on one of the layers (a summary's shape probe, a user's) must see it run: then no fusion."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in layers)
