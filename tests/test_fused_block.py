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
    fast = build_layers(PRESETS["fast"], (1, 28, 28), 10).to(memory_format=CL)  # BN-ReLU stem, two BN-pool-ReLU
    large = build_layers(PRESETS["fast-large"], (1, 28, 28), 10).to(memory_format=CL)  # pool-BN-ReLU x3, BN-ReLU x2
    x = torch.rand(4, 1, 28, 28).contiguous(memory_format=CL)
    assert _grad_fn_names(fast.train()(x)).count("_BatchNormPoolReLUBackward") == 3
    names = _grad_fn_names(large.train()(x))
    assert names.count("_BatchNormPoolReLUBackward") == 5 and "NativeBatchNormBackward0" not in names


def test_a_trained_network_follows_the_same_path_with_and_without_fusion():
    torch.manual_seed(0)
    fused = build_layers(PRESETS["simple-2conv"], (1, 28, 28), 10).to(memory_format=CL)
    plain = nn.Sequential(*[type(m)() if isinstance(m, nn.ReLU) else m for m in build_layers(
        PRESETS["simple-2conv"], (1, 28, 28), 10)]).to(memory_format=CL)
    plain.load_state_dict(fused.state_dict())
    data = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 28, 28, generator=data).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (64,), generator=data)
    losses = {}
    for name, net in (("fused", fused), ("plain", plain)):
        # SGD: Adam would blow the conv biases' rounding-noise gradients (exactly zero before BatchNorm) up to steps
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        losses[name] = []
        for step in range(8):
            batch = slice(step % 2 * 32, step % 2 * 32 + 32)
            loss = F.cross_entropy(net.train()(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    torch.testing.assert_close(torch.tensor(losses["fused"]), torch.tensor(losses["plain"]), rtol=1e-4, atol=1e-5)
    for (key, a), (_, b) in zip(fused.state_dict().items(), plain.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=key)


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
