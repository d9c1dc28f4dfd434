"""TensorFlow-style "same" padding made static for an export.

timm's Conv2dSame (the stride-2 convolutions of the TF-ported EfficientNets, Lite0 among them) computes its padding
from the input's shape at every call; exported, that is a chain of Shape/Gather/Ceil/Pad nodes per convolution.
ONNX Runtime's int8 quantizer quantizes through that chain and the quantized graph then fails ("Invalid input
shape" in a depthwise convolution). An exported Classifier always sees the same H×W (its adapter resizes to the
backbone's input), so each padding is one constant: timm's own Conv2dSameExport computes it on its first call and
keeps it.
"""

from __future__ import annotations

import copy

import torch


def with_static_padding(model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """The model itself when nothing pads dynamically, else a copy whose Conv2dSame layers pad by the constant
    that `example`'s H×W gives them (the caller's model is left as it is)."""
    from timm.layers.conv2d_same import Conv2dSame, Conv2dSameExport

    if not any(isinstance(m, Conv2dSame) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, Conv2dSame):
            module.__class__ = Conv2dSameExport  # the same nn.Conv2d parameters; pads fixed on first call
            module.pad, module.pad_input_size = None, (0, 0)
    with torch.inference_mode():
        model(example[:1])
    return model
