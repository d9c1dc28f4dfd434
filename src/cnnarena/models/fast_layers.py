"""Two exact rewrites that make a custom CNN's training step cheaper on a CPU, without changing its function.

- Max-pooling before a monotone activation instead of after it: relu(maxpool(x)) == maxpool(relu(x)) for any
  non-decreasing activation, and the activation then runs (forward and backward) on a quarter of the
  pixels. Neither layer has parameters, so the state-dict keys are the same either way.
- A Flatten that hands its gradient back in the input's memory layout. With channels_last activations,
  plain nn.Flatten's backward returns a contiguous (NCHW) gradient; max_pool2d's backward then converts its
  input and its result between layouts (two full-size copies per step).

On simple-2conv (the 2-core CPU, fit() on channels_last batches, A/B in one process with interleaved rounds):
batch 32 3,083 -> 3,315 img/s (+7.5%); batch 256 3,198 -> 3,632 img/s (+14%, a run with glibc's mmap
threshold raised to steady its rounds).
"""

from __future__ import annotations

import torch
from torch import nn

# Non-decreasing activations: max commutes with them. (GELU and SiLU dip below zero: not these.)
MONOTONE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid)


def _is_monotone(module: nn.Module) -> bool:
    return isinstance(module, MONOTONE) and getattr(module, "negative_slope", 0.0) >= 0  # LeakyReLU(-a) is not


class LayoutFlatten(nn.Flatten):
    """nn.Flatten whose backward keeps a channels_last input's layout for the gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.requires_grad and _is_channels_last(x):
            x.register_hook(lambda grad: grad.contiguous(memory_format=torch.channels_last))
        return super().forward(x)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def pool_before_activation(layers: list[nn.Module]) -> list[nn.Module]:
    """Swap every (monotone activation, MaxPool2d) pair; other layers stay where they are."""
    out = list(layers)
    for i in range(len(out) - 1):
        if _is_monotone(out[i]) and isinstance(out[i + 1], nn.MaxPool2d):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out
