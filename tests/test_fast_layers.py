"""The layout rewrites of custom CNNs keep the network's function and gradients, and do what they claim."""

import torch
from torch import nn

from cnnarena.models.custom import PRESETS, build_layers
from cnnarena.models.fast_layers import LayoutFlatten, pool_before_activation


def _reference_layers(spec, in_shape, num_classes):
    """The same network in the spec's own order, with plain nn.Flatten: what a hand-written model would be."""
    net = build_layers(spec, in_shape, num_classes)
    mods = [nn.Flatten() if isinstance(m, LayoutFlatten) else m for m in net]
    for i in range(len(mods) - 1):  # undo the swap
        if isinstance(mods[i], nn.MaxPool2d) and isinstance(mods[i + 1], nn.ReLU):
            mods[i], mods[i + 1] = mods[i + 1], mods[i]
    return net, nn.Sequential(*mods)


def test_simple_2conv_pools_before_relu_and_keeps_its_parameter_names():
    net = build_layers(PRESETS["simple-2conv"], (1, 28, 28), 10)
    kinds = [type(m).__name__ for m in net]
    assert kinds[:8] == ["Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU", "Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU"]
    assert isinstance(net[8], LayoutFlatten)
    # parameters sit at the indices the spec order gives them: old checkpoints still load
    assert {k.split(".")[0] for k in net.state_dict()} == {"0", "1", "4", "5", "9", "11", "13"}


def test_rewritten_network_has_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    fast, plain = _reference_layers(PRESETS["simple-2conv"], (1, 28, 28), 10)
    assert [type(m) for m in fast] != [type(m) for m in plain]
    x = torch.randn(8, 1, 28, 28)
    for net in (fast, plain):
        net.to(memory_format=torch.channels_last)
    out_fast = fast(x.contiguous(memory_format=torch.channels_last))
    out_plain = plain(x)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-5, atol=1e-5)
    out_fast.square().sum().backward()
    out_plain.square().sum().backward()
    for (name, a), (_, b) in zip(fast.named_parameters(), plain.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)


class _Probe(torch.autograd.Function):
    """Identity that records the gradient its backward receives (what the layer before Flatten gets)."""

    seen: list[torch.Tensor] = []

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        _Probe.seen.append(grad)
        return grad


def _gradient_reaching_the_layer_before(flatten: nn.Module) -> torch.Tensor:
    _Probe.seen.clear()
    x = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    flatten(_Probe.apply(x)).sum().backward()
    return _Probe.seen[0]


def test_layout_flatten_returns_a_channels_last_gradient():
    plain = _gradient_reaching_the_layer_before(nn.Flatten())
    assert not plain.is_contiguous(memory_format=torch.channels_last)  # the copy the rewrite avoids
    ours = _gradient_reaching_the_layer_before(LayoutFlatten())
    assert ours.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours, plain)
    # in eval mode (export, inference) it is plain nn.Flatten: no hook is registered
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.equal(LayoutFlatten().eval()(x), x.flatten(1))


def test_only_monotone_activations_move():
    layers = [nn.GELU(), nn.MaxPool2d(2), nn.SiLU(), nn.MaxPool2d(2), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
              nn.LeakyReLU(-0.5), nn.MaxPool2d(2), nn.ReLU(), nn.AvgPool2d(2)]
    kinds = [type(m).__name__ for m in pool_before_activation(layers)]
    assert kinds == ["GELU", "MaxPool2d", "SiLU", "MaxPool2d", "MaxPool2d", "LeakyReLU",
                     "LeakyReLU", "MaxPool2d", "ReLU", "AvgPool2d"]
