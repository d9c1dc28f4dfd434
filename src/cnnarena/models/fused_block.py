"""BatchNorm -> 2x2 max-pool -> ReLU (or BatchNorm -> ReLU) of a custom CNN, trained on a CPU as one fused step.

Why: these layers are memory-bound, and PyTorch runs them as five full-size passes forward and six backward over
the conv's output, the largest tensor in the network; the C kernels in kernels/bn_pool_relu.c take two each way
(the measurements: benchmarks/results/fused_kernels.md). Their sums run in double, so they are closer to float64
than PyTorch's float32 path (tests/test_fused_block.py holds them to it).

They run only where they compute the same thing as the layers: training mode on a CPU, float32 channels_last
activations, affine BatchNorm with running statistics and a momentum, a 2x2 stride-2 max-pool, then ReLU.
Everywhere else (evaluation, export, GPUs, autocast, torch.compile) the layers run as they are. The kernels are
compiled once per machine with the system C compiler (cached under runtime.cache_dir() / "kernels"); without
one, or with CNNARENA_FUSED_KERNELS=0, training uses the plain layers.

The boundary: the kernels are called only inside four torch.library custom ops (cnnarena::bn_pool_relu_forward,
..._backward, cnnarena::bn_relu_forward, ..._backward), which check device, dtype, memory layout and shapes
before any pointer reaches C, have fake (meta) implementations for shapes, and turn the kernels' status codes
into exceptions (MemoryError when one could not allocate its scratch memory).
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
from torch import Tensor, nn

from ..runtime import cache_dir

SOURCE = Path(__file__).with_name("kernels") / "bn_pool_relu.c"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")
_lib: ctypes.CDLL | None | bool = False  # False: not tried yet; None: not available here
_STATUS_NO_MEMORY, _STATUS_BAD_SIZES = 1, 2  # the C file's BPR_NO_MEMORY, BPR_BAD_SIZES (0: BPR_OK)


class _Dims(ctypes.Structure):
    """The sizes every C entry point takes, by pointer: the C file's bpr_dims."""

    _fields_ = [("n", ctypes.c_int64), ("h", ctypes.c_int64), ("w", ctypes.c_int64), ("c", ctypes.c_int64),
                ("threads", ctypes.c_int32), ("eps", ctypes.c_float)]


class _ForwardIO(ctypes.Structure):
    """A forward entry point's tensors by name (the C file's bpr_forward_io): their data pointers."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("y", "gamma", "beta", "out", "which", "mean", "var", "invstd")]


class _BackwardIO(ctypes.Structure):
    """A backward entry point's tensors by name (the C file's bpr_backward_io)."""

    _fields_ = [(name, ctypes.c_void_p)
                for name in ("dout", "y", "which", "gamma", "mean", "invstd", "dy", "dgamma", "dbeta")]


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
    cache = cache_dir() / "kernels"
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
    return lib if _declare(lib) else None


def _cpu_signature() -> str:
    """-march=native code runs only where it was built: the key includes the CPU's model and flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "|".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))


def _declare(lib: ctypes.CDLL) -> bool:
    """Declares the entry points' signatures; False if the library's structs are not the size of their mirrors."""
    lib.bpr_struct_size.argtypes, lib.bpr_struct_size.restype = [ctypes.c_int], ctypes.c_size_t
    if [lib.bpr_struct_size(i) for i in range(3)] != [ctypes.sizeof(t) for t in (_Dims, _ForwardIO, _BackwardIO)]:
        return False
    for entry, io in (("bpr_forward", _ForwardIO), ("br_forward", _ForwardIO),
                      ("bpr_backward", _BackwardIO), ("br_backward", _BackwardIO)):
        getattr(lib, entry).argtypes = [ctypes.POINTER(_Dims), ctypes.POINTER(io)]
        getattr(lib, entry).restype = ctypes.c_int  # 0, or the C file's BPR_NO_MEMORY / BPR_BAD_SIZES
    return True


# --- the ops: what crosses into C is checked here -------------------------------------------------------------

_CL = torch.channels_last


def _check(op: str, name: str, t: Tensor, dtype: torch.dtype, shape: tuple | None, channels_last: bool,
           device: torch.device | None) -> None:
    """Raises ValueError unless `t` is what the C kernels read: on the CPU (device None: real tensors) or on
    `device` (fake and meta tensors: x's), of `dtype` and `shape` (None: 4-d), dense in the layout they index."""
    if ((t.is_cpu if device is None else t.device == device) and t.layout == torch.strided and t.dtype == dtype
            and (t.dim() == 4 if shape is None else t.shape == shape)
            and (t.is_contiguous(memory_format=_CL) if channels_last else t.is_contiguous())):
        return  # the common case, in a few attribute reads; the messages below only when it is not
    if device is None and not t.is_cpu:
        raise ValueError(f"{op}: {name} must be on the CPU (the kernels are C), got a tensor on {t.device}")
    if device is not None and t.device != device:
        raise ValueError(f"{op}: {name} must be on x's device {device}, got {t.device}")
    if t.layout != torch.strided:
        raise ValueError(f"{op}: {name} must be a dense (strided) tensor, got layout {t.layout}")
    if t.dtype != dtype:
        raise ValueError(f"{op}: {name} must be {dtype}, got {t.dtype}")
    if shape is None and t.dim() != 4:
        raise ValueError(f"{op}: {name} must be a 4-d (N, C, H, W) map, got shape {tuple(t.shape)}")
    if shape is not None and t.shape != shape:
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if channels_last:
        raise ValueError(f"{op}: {name} must be channels_last (NHWC in memory) and dense, as the C kernels index "
                         f"it; got strides {t.stride()}: use .contiguous(memory_format=torch.channels_last)")
    raise ValueError(f"{op}: {name} must be contiguous, got strides {t.stride()}")


def _check_map(op: str, x: Tensor, pool: bool, real: bool) -> tuple[tuple[int, int, int, int], torch.device | None]:
    """Checks x; returns its sizes and the device the other tensors must be on (None: the CPU)."""
    device = None if real else x.device
    _check(op, "x", x, torch.float32, None, True, device)
    n, c, h, w = x.shape
    least = 2 if pool else 1
    if n < 1 or c < 1 or h < least or w < least:
        raise ValueError(f"{op}: x must be at least 1 x 1 x {least} x {least} (N x C x H x W), got {tuple(x.shape)}")
    return (n, c, h, w), device


def _check_forward(op: str, pool: bool, x: Tensor, weight: Tensor, bias: Tensor, real: bool = True) -> None:
    (_, c, _, _), device = _check_map(op, x, pool, real)
    _check(op, "weight", weight, torch.float32, (c,), False, device)
    _check(op, "bias", bias, torch.float32, (c,), False, device)


def _check_backward(op: str, pool: bool, grad_out: Tensor, x: Tensor, which: Tensor, weight: Tensor,
                    mean: Tensor, invstd: Tensor, real: bool = True) -> None:
    (n, c, h, w), device = _check_map(op, x, pool, real)
    oh, ow = (h // 2, w // 2) if pool else (h, w)
    _check(op, "grad_out", grad_out, torch.float32, (n, c, oh, ow), True, device)
    _check(op, "which", which, torch.uint8, (n, oh, ow, c), False, device)
    for name, t in (("weight", weight), ("mean", mean), ("invstd", invstd)):
        _check(op, name, t, torch.float32, (c,), False, device)


def _run(op: str, entry: str, x: Tensor, eps: float, io: ctypes.Structure) -> None:
    """The one call of C entry point `entry` on x's sizes and the checked tensors' pointers `io`; a non-zero
    status becomes an exception."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"{op}: the fused kernels are not available here (no C compiler, not Linux, "
                           "or CNNARENA_FUSED_KERNELS=0)")
    n, c, h, w = x.shape
    dims = _Dims(n, h, w, c, max(1, torch.get_num_threads()), eps)
    status = getattr(lib, entry)(ctypes.byref(dims), ctypes.byref(io))
    if status == _STATUS_NO_MEMORY:
        raise MemoryError(f"fused BatchNorm kernel: out of memory in {entry} (its scratch memory for "
                          f"{n} x {c} x {h} x {w}, {dims.threads} threads)")
    if status != 0:
        what = "sizes below 1" if status == _STATUS_BAD_SIZES else f"status {status}"
        raise RuntimeError(f"{op}: the C kernel {entry} failed: {what} ({n} x {c} x {h} x {w})")


def _forward_outputs(x: Tensor, pool: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """out (N, C, H', W') channels_last, which (N, H', W', C) uint8, mean, var, invstd (C,)."""
    n, c, h, w = x.shape
    oh, ow = (h // 2, w // 2) if pool else (h, w)
    out = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device, memory_format=_CL)
    which = torch.empty((n, oh, ow, c), dtype=torch.uint8, device=x.device)
    return out, which, x.new_empty(c), x.new_empty(c), x.new_empty(c)


def _backward_outputs(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """grad_x (like x, channels_last), grad_weight, grad_bias (C,)."""
    c = x.shape[1]
    return torch.empty_like(x, memory_format=_CL), x.new_empty(c), x.new_empty(c)


# The four ops, registered at import (cheap: nothing is compiled until one first runs). Defined with a Library,
# not torch.library.custom_op, whose Python wrapper costs a few times the dispatch itself on every call (see
# benchmarks/results/fused_kernels.md). Forward's `which`[n, i, j, c] is the 2x2 window position the max-pool
# chose (0-3) | 4 where the ReLU passed it; mean and var are the batch's (biased), invstd is 1 / sqrt(var + eps).
# Backward takes forward's x, which, mean, invstd and BatchNorm's weight.
_LIBRARY = torch.library.Library("cnnarena", "FRAGMENT")  # the ops live as long as this object
_FORWARD = ("(Tensor x, Tensor weight, Tensor bias, float eps) -> "
            "(Tensor out, Tensor which, Tensor mean, Tensor var, Tensor invstd)")
_BACKWARD = ("(Tensor grad_out, Tensor x, Tensor which, Tensor weight, Tensor mean, Tensor invstd) -> "
             "(Tensor grad_x, Tensor grad_weight, Tensor grad_bias)")


def _define(name: str, pool: bool, backward: bool) -> torch._ops.OpOverload:
    op = f"cnnarena::{name}"
    entry = ("bpr_" if pool else "br_") + ("backward" if backward else "forward")  # the C entry point

    def run_forward(x: Tensor, weight: Tensor, bias: Tensor, eps: float):
        _check_forward(op, pool, x, weight, bias)
        out, which, mean, var, invstd = outputs = _forward_outputs(x, pool)
        io = _ForwardIO(y=x.data_ptr(), gamma=weight.data_ptr(), beta=bias.data_ptr(), out=out.data_ptr(),
                        which=which.data_ptr(), mean=mean.data_ptr(), var=var.data_ptr(), invstd=invstd.data_ptr())
        _run(op, entry, x, eps, io)
        return outputs

    def run_backward(grad_out: Tensor, x: Tensor, which: Tensor, weight: Tensor, mean: Tensor, invstd: Tensor):
        _check_backward(op, pool, grad_out, x, which, weight, mean, invstd)
        grad_x, grad_weight, grad_bias = outputs = _backward_outputs(x)
        io = _BackwardIO(dout=grad_out.data_ptr(), y=x.data_ptr(), which=which.data_ptr(), gamma=weight.data_ptr(),
                         mean=mean.data_ptr(), invstd=invstd.data_ptr(), dy=grad_x.data_ptr(),
                         dgamma=grad_weight.data_ptr(), dbeta=grad_bias.data_ptr())
        _run(op, entry, x, 0.0, io)
        return outputs

    def fake_forward(x, weight, bias, eps):
        _check_forward(op, pool, x, weight, bias, real=False)
        return _forward_outputs(x, pool)

    def fake_backward(grad_out, x, which, weight, mean, invstd):
        _check_backward(op, pool, grad_out, x, which, weight, mean, invstd, real=False)
        return _backward_outputs(x)

    _LIBRARY.define(name + (_BACKWARD if backward else _FORWARD))
    # every device: a GPU tensor gets _check's message, not the dispatcher's "no kernel"
    _LIBRARY.impl(name, run_backward if backward else run_forward, "CompositeExplicitAutograd")
    torch.library.register_fake(op, fake_backward if backward else fake_forward, lib=_LIBRARY)
    return getattr(torch.ops.cnnarena, name).default


bn_pool_relu_forward = _define("bn_pool_relu_forward", pool=True, backward=False)
bn_pool_relu_backward = _define("bn_pool_relu_backward", pool=True, backward=True)
bn_relu_forward = _define("bn_relu_forward", pool=False, backward=False)
bn_relu_backward = _define("bn_relu_backward", pool=False, backward=True)


class _BatchNormPoolReLU(torch.autograd.Function):
    """BatchNorm (training) -> 2x2/2 max-pool -> ReLU, or with pool=False BatchNorm -> ReLU: the ops above, and
    BatchNorm2d's running statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, bn: nn.BatchNorm2d, pool: bool):
        weight_c, bias_c = weight.detach().contiguous(), bias.detach().contiguous()
        op = bn_pool_relu_forward if pool else bn_relu_forward
        out, which, mean, var, invstd = op(x, weight_c, bias_c, bn.eps)
        with torch.no_grad():  # running statistics, as BatchNorm2d keeps them (unbiased variance)
            n, _, h, w = x.shape
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
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        op = bn_pool_relu_backward if ctx.pool else bn_relu_backward
        grad_x, grad_w, grad_b = op(grad_out, x, which, weight, mean, invstd)
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
