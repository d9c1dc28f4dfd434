"""The fused BatchNorm -> max-pool -> ReLU kernels compute what the three layers do, and run only where they may."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnarena.models import fused_block
from cnnarena.models.custom import PRESETS, build_layers
from cnnarena.models.fused_block import FusingSequential, batchnorm_pool_relu, library

CL = torch.channels_last


def _layers(x, bn, pool):
    return F.relu(F.max_pool2d(bn(x), 2) if pool else bn(x))


def _layers_reference(x, bn, grad, pool):
    """The layers as PyTorch runs them, in float64: the ground truth both float32 paths are held to."""
    x64 = x.detach().double().contiguous(memory_format=CL).requires_grad_()
    bn64 = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum).double()
    bn64.load_state_dict(bn.state_dict())
    out = _layers(x64, bn64, pool)
    out.backward(grad.double())
    return out, x64.grad, bn64


def _fused(x, bn, grad, pool):
    x32 = x.detach().clone().contiguous(memory_format=CL).requires_grad_()
    out = batchnorm_pool_relu(x32, bn, pool)
    out.backward(grad)
    return out, x32.grad


def _plain32(x, bn, grad, pool):
    x32 = x.detach().clone().contiguous(memory_format=CL).requires_grad_()
    out = _layers(x32, bn, pool)
    out.backward(grad)
    return out, x32.grad


@pytest.mark.slow  # a subprocess
def test_the_kernels_build_here_and_use_pytorchs_openmp_runtime():
    assert library() is not None, "the C kernels did not build: is a C compiler (cc) installed?"
    # In a fresh process: loading the kernels must not map a second libgomp (two thread pools would fight).
    script = (
        "import torch\n"
        "from pathlib import Path\n"
        "def gomp():\n"
        "    return {l.split()[-1] for l in Path('/proc/self/maps').read_text().splitlines() if 'libgomp' in l}\n"
        "before = gomp()\n"
        "from cnnarena.models.fused_block import library\n"
        "assert library() is not None\n"
        "print(sorted(before), sorted(gomp()))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.strip().split("] [")
    assert before + "]" == "[" + after and "torch" in before, done.stdout


@pytest.mark.parametrize("pool", [True, False], ids=["bn-pool-relu", "bn-relu"])
@pytest.mark.parametrize("n,c,h,w", [(32, 32, 28, 28), (5, 7, 9, 11), (3, 64, 14, 14), (2, 16, 7, 7)])
def test_fused_matches_the_layers_in_float64_better_than_pytorchs_float32(n, c, h, w, pool):
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w) * 3 + 1
    x[:, :, : h // 3] = 0.25  # whole windows of equal values: max_pool2d's first-index tie rule must hold
    bn_fused, bn_plain = nn.BatchNorm2d(c), nn.BatchNorm2d(c)
    with torch.no_grad():
        bn_fused.weight.uniform_(-1.0, 1.5)  # negative scales turn the max into a min of the input
        bn_fused.bias.normal_()
        bn_fused.running_mean.normal_()
    bn_plain.load_state_dict(bn_fused.state_dict())
    grad = torch.randn(n, c, h // 2, w // 2) if pool else torch.randn(n, c, h, w)

    ref_out, ref_dx, ref_bn = _layers_reference(x, bn_fused, grad, pool)
    out, dx = _fused(x, bn_fused, grad, pool)
    plain_out, plain_dx = _plain32(x, bn_plain, grad, pool)

    assert out.is_contiguous(memory_format=CL) and dx.is_contiguous(memory_format=CL)
    for ours, theirs, truth in ((out, plain_out, ref_out), (dx, plain_dx, ref_dx),
                                (bn_fused.weight.grad, bn_plain.weight.grad, ref_bn.weight.grad),
                                (bn_fused.bias.grad, bn_plain.bias.grad, ref_bn.bias.grad)):
        err = (ours.double() - truth).abs().max().item()
        torch_err = (theirs.double() - truth).abs().max().item()
        assert err <= max(2 * torch_err, 1e-5 * truth.abs().max().item()), (err, torch_err)
    torch.testing.assert_close(bn_fused.running_mean, ref_bn.running_mean.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn_fused.running_var, ref_bn.running_var.float(), rtol=1e-5, atol=1e-6)
    assert bn_fused.num_batches_tracked.item() == bn_plain.num_batches_tracked.item() == 1


@pytest.mark.parametrize("pool", [True, False])
def test_nan_propagates_forward_like_relu(pool):
    x = torch.randn(2, 8, 4, 4)
    x[0, 3, 0, 0] = float("nan")
    out = batchnorm_pool_relu(x.contiguous(memory_format=CL).requires_grad_(), nn.BatchNorm2d(8), pool)
    assert torch.isnan(out[0, 3, 0, 0])


def _grad_fn_names(out: torch.Tensor) -> list[str]:
    """The names of the autograd graph's nodes, one per node."""
    seen, todo = set(), [out.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        todo.extend(f for f, _ in fn.next_functions)
    return [fn.name() for fn in seen]


def test_the_network_takes_the_fused_path_only_while_training_on_channels_last_cpu_batches():
    net = build_layers(PRESETS["simple-2conv"], (1, 28, 28), 10)
    assert isinstance(net, FusingSequential)
    net.to(memory_format=CL)
    x = torch.rand(4, 1, 28, 28).contiguous(memory_format=CL)
    fused = "_BatchNormPoolReLUBackward"
    assert sum(fused in n for n in _grad_fn_names(net.train()(x))) == 2  # both conv blocks
    nchw = build_layers(PRESETS["simple-2conv"], (3, 28, 28), 10)  # default layout: the layers run as they are
    assert not any(fused in n for n in _grad_fn_names(nchw.train()(torch.rand(4, 3, 28, 28))))
    with torch.no_grad():
        net.eval()(x)  # evaluation and export run the layers themselves
    net.train()
    probe = net[1].register_forward_hook(lambda *a: None)  # a hook must see its layer run
    assert sum(fused in n for n in _grad_fn_names(net(x))) == 1  # the second block only
    probe.remove()


def test_the_fast_presets_fuse_every_batchnorm_relu_run():
    x = torch.rand(4, 1, 28, 28).contiguous(memory_format=CL)
    # pool-BN-ReLU x3, BN-ReLU x2 (x3 in fast-large): the grad_fn counts both kinds
    for preset, runs in (("fast", 5), ("fast-large", 6)):
        net = build_layers(PRESETS[preset], (1, 28, 28), 10).to(memory_format=CL)
        names = _grad_fn_names(net.train()(x))
        assert names.count("_BatchNormPoolReLUBackward") == runs and "NativeBatchNormBackward0" not in names, preset


def test_a_trained_network_follows_the_float64_path_of_the_layers():
    """8 SGD steps with the fused blocks stay next to the same steps through the plain layers in float64. (Not next
    to PyTorch's own float32 layers: on one thread its channels-last BatchNorm backward is the less accurate one,
    up to 1.7% of a weight's scale away from float64 after these steps, against the fused blocks' 0.2%.)"""
    torch.manual_seed(0)
    fused = build_layers(PRESETS["simple-2conv"], (1, 28, 28), 10).to(memory_format=CL)
    exact = nn.Sequential(*[type(m)() if isinstance(m, nn.ReLU) else m for m in build_layers(
        PRESETS["simple-2conv"], (1, 28, 28), 10)]).to(memory_format=CL)
    exact.load_state_dict(fused.state_dict())
    exact.double()
    data = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 28, 28, generator=data).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (64,), generator=data)
    losses = {}
    for name, net in (("fused", fused), ("exact", exact)):
        # SGD: Adam would blow the conv biases' rounding-noise gradients (exactly zero before BatchNorm) up to steps
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        losses[name] = []
        for step in range(8):
            batch = slice(step % 2 * 32, step % 2 * 32 + 32)
            loss = F.cross_entropy(net.train()(x[batch].to(next(net.parameters()).dtype)), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    torch.testing.assert_close(torch.tensor(losses["fused"]), torch.tensor(losses["exact"]), rtol=1e-4, atol=1e-5)
    for (key, a), (_, b) in zip(fused.state_dict().items(), exact.state_dict().items(), strict=True):
        if a.is_floating_point():
            assert (a.double() - b).abs().max() <= 5e-3 * b.abs().max(), key


def test_without_a_compiler_or_when_switched_off_training_uses_the_layers(monkeypatch, tmp_path):
    monkeypatch.setattr(fused_block, "_lib", False)
    monkeypatch.setenv("CNNARENA_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert library() is None
    net = build_layers(PRESETS["simple-2conv"], (1, 28, 28), 10).to(memory_format=CL)
    out = net.train()(torch.rand(4, 1, 28, 28).contiguous(memory_format=CL))
    assert not any("_BatchNormPoolReLU" in n for n in _grad_fn_names(out))

    monkeypatch.setattr(fused_block, "_lib", False)
    monkeypatch.delenv("CC")
    monkeypatch.setenv("CNNARENA_FUSED_KERNELS", "0")
    assert library() is None
    monkeypatch.setattr(fused_block, "_lib", False)
    monkeypatch.delenv("CNNARENA_FUSED_KERNELS")
    assert library() is not None  # built afresh into the empty cache folder
    assert [p.suffix for p in (tmp_path / "kernels").iterdir()] == [".so"]  # no half-written files left


# --- the boundary: the ops check what reaches the C kernels ---------------------------------------------------

def _op_inputs(pool):
    x = torch.randn(3, 5, 6, 7).contiguous(memory_format=CL)
    weight, bias = torch.rand(5) + 0.5, torch.randn(5)
    forward, backward = ((fused_block.bn_pool_relu_forward, fused_block.bn_pool_relu_backward) if pool
                         else (fused_block.bn_relu_forward, fused_block.bn_relu_backward))
    out, which, mean, _, invstd = forward(x, weight, bias, 1e-5)
    grad = torch.randn(out.shape).contiguous(memory_format=CL)
    return forward, (x, weight, bias, 1e-5), backward, (grad, x, which, weight, mean, invstd)


@pytest.mark.parametrize("pool", [True, False], ids=["bn-pool-relu", "bn-relu"])
def test_the_ops_pass_opcheck(pool):
    forward, forward_args, backward, backward_args = _op_inputs(pool)
    torch.library.opcheck(forward, forward_args)  # schema, fake (meta) shapes and strides, tracing
    torch.library.opcheck(backward, backward_args)
    meta = forward(*(a.to("meta") if isinstance(a, torch.Tensor) else a for a in forward_args))
    assert [t.shape for t in meta] == [t.shape for t in forward(*forward_args)]


FORWARD_ARGS, BACKWARD_ARGS = ("x", "weight", "bias", "eps"), ("grad_out", "x", "which", "weight", "mean", "invstd")


@pytest.mark.parametrize("step,arg,bad,message", [
    ("forward", "x", lambda t: t.contiguous(), r"x must be channels_last \(NHWC in memory\) and dense"),
    ("forward", "x", lambda t: t.double().contiguous(memory_format=CL), "x must be torch.float32, got torch.float64"),
    ("forward", "x", lambda t: t[:, :, :, ::2], "x must be channels_last"),  # a strided view: not dense
    ("forward", "x", lambda t: t[0], r"x must be a 4-d \(N, C, H, W\) map"),
    ("forward", "x", lambda t: t.to("meta"), "weight must be on x's device meta, got cpu"),
    ("forward", "weight", lambda t: t[:4], r"weight must have shape \(5,\), got \(4,\)"),
    ("forward", "bias", lambda t: t.half(), "bias must be torch.float32"),
    ("backward", "grad_out", lambda t: t.contiguous(), "grad_out must be channels_last"),
    ("backward", "grad_out", lambda t: t[:1], r"grad_out must have shape \(3, 5, "),
    ("backward", "which", lambda t: t.float(), "which must be torch.uint8"),
    ("backward", "which", lambda t: t.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1), "which must be contiguous"),
    ("backward", "mean", lambda t: t[:3], r"mean must have shape \(5,\)"),
])
@pytest.mark.parametrize("pool", [True, False], ids=["bn-pool-relu", "bn-relu"])
def test_the_ops_reject_what_the_kernels_cannot_read_with_a_clear_message(pool, step, arg, bad, message):
    forward, forward_args, backward, backward_args = _op_inputs(pool)
    op, names, args = (forward, FORWARD_ARGS, forward_args) if step == "forward" else (backward, BACKWARD_ARGS,
                                                                                     backward_args)
    args = list(args)
    args[names.index(arg)] = bad(args[names.index(arg)])
    with pytest.raises(ValueError, match=f"cnnarena::bn_{'pool_' if pool else ''}relu_{step}: {message}"):
        op(*args)


def test_the_ops_read_a_tensor_at_its_offset():
    big = torch.randn(4, 5, 6, 6).contiguous(memory_format=CL)
    weight, bias = torch.rand(5) + 0.5, torch.randn(5)
    part = big[1:3]  # channels_last and dense, starting 180 floats into the storage
    assert part.storage_offset() > 0
    for got, want in zip(fused_block.bn_pool_relu_forward(part, weight, bias, 1e-5),
                         fused_block.bn_pool_relu_forward(part.clone(memory_format=CL), weight, bias, 1e-5),
                         strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_the_ops_need_the_map_the_pool_needs_and_say_so():
    x = torch.randn(2, 3, 1, 5).contiguous(memory_format=CL)
    with pytest.raises(ValueError, match=r"at least 1 x 1 x 2 x 2 .* got \(2, 3, 1, 5\)"):
        fused_block.bn_pool_relu_forward(x, torch.ones(3), torch.zeros(3), 1e-5)
    assert fused_block.bn_relu_forward(x, torch.ones(3), torch.zeros(3), 1e-5)[0].shape == x.shape  # no pool: fine


def test_a_kernel_status_becomes_an_exception(monkeypatch):
    args = (torch.randn(2, 3, 4, 4).contiguous(memory_format=CL), torch.ones(3), torch.zeros(3), 1e-5)
    monkeypatch.setattr(fused_block, "_lib", type("FailingLib", (), {"bpr_forward": staticmethod(lambda d, io: 1),
                                                                    "br_forward": staticmethod(lambda d, io: 7)}))
    with pytest.raises(MemoryError, match=r"fused BatchNorm kernel: out of memory in bpr_forward"):
        fused_block.bn_pool_relu_forward(*args)
    with pytest.raises(RuntimeError, match="br_forward failed: status 7"):
        fused_block.bn_relu_forward(*args)
    monkeypatch.setattr(fused_block, "_lib", None)
    with pytest.raises(RuntimeError, match="fused kernels are not available here"):
        fused_block.bn_relu_forward(*args)


@pytest.mark.slow  # a subprocess
def test_importing_registers_the_ops_without_building_and_a_failed_allocation_is_a_memory_error():
    """In a fresh process: the ops exist after the import, the kernels are not loaded until used, and with its
    address space capped so that the outputs fit but the kernel's scratch memory does not, the C code reports
    the failed allocation (freeing what it had) as a MemoryError, and the next call works."""
    script = (
        "import resource, torch\n"
        "from cnnarena.models import fused_block as fb\n"
        "assert fb._lib is False and torch.ops.cnnarena.bn_relu_forward.default is fb.bn_relu_forward\n"
        "cl = torch.channels_last\n"
        "small = torch.randn(2, 4, 4, 4).contiguous(memory_format=cl)\n"
        "fb.bn_relu_forward(small, torch.ones(4), torch.zeros(4), 1e-5)  # built, and OpenMP's threads started\n"
        "c = 4_000_000  # outputs ~84 MB, scratch memory ~100 MB a thread + 32 MB\n"
        "x, w, b = torch.randn(1, c, 1, 1).contiguous(memory_format=cl), torch.ones(c), torch.zeros(c)\n"
        "vm = next(int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmSize')) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 150 * 2**20, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    fb.bn_relu_forward(x, w, b, 1e-5)\n"
        "    print('no error')\n"
        "except MemoryError as e:\n"
        "    print(e)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
        "assert fb.bn_relu_forward(small, torch.ones(4), torch.zeros(4), 1e-5)[0].shape == small.shape\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("fused BatchNorm kernel: out of memory in br_forward"), done.stdout
