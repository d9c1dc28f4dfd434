"""Custom CNNs from a declarative layer spec (YAML/JSON), plus the presets the reports used.

A spec is a list of layers; each is a name (`relu`) or a one-key mapping (`conv: {filters: 32}`,
`dense: 128`). Shapes are tracked while building, so dense layers need no input size, and a final
Linear to the number of classes is appended automatically. Presets are specs too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..schema import CUSTOM_PRESETS
from .base import Classifier, ModelMeta, count_parameters
from .fast_layers import LayoutFlatten, pool_before_activation
from .fused_block import FusingSequential

Spec = list[Any]

# The three architectures the reports trained by hand, and one designed for accuracy per second.
PRESETS: dict[str, Spec] = {
    # (1) 2 conv blocks 32/64 3×3 + BN + ReLU + maxpool, dense 128 -> 64 -> classes.
    "simple-2conv": [
        {"conv": 32}, "batchnorm", "relu", "maxpool",
        {"conv": 64}, "batchnorm", "relu", "maxpool",
        "flatten", {"dense": 128}, "relu", {"dense": 64}, "relu",
    ],
    # (2) 3 conv blocks 32/64/128 5×5 pad 2 + BN + ReLU + maxpool, dense 64 + dropout 0.5.
    "simple-3conv-5x5": [
        {"conv": {"filters": 32, "kernel": 5, "padding": 2}}, "batchnorm", "relu", "maxpool",
        {"conv": {"filters": 64, "kernel": 5, "padding": 2}}, "batchnorm", "relu", "maxpool",
        {"conv": {"filters": 128, "kernel": 5, "padding": 2}}, "batchnorm", "relu", "maxpool",
        "flatten", {"dense": 64}, "relu", {"dropout": 0.5},
    ],
    # (3) 3 conv 32/64/128 3×3 + BN + ReLU, maxpool after the first two, dense 512 + dropout 0.5.
    "simple-3conv-dense512": [
        {"conv": 32}, "batchnorm", "relu", "maxpool",
        {"conv": 64}, "batchnorm", "relu", "maxpool",
        {"conv": 128}, "batchnorm", "relu",
        "flatten", {"dense": 512}, "relu", {"dropout": 0.5},
    ],
    # Designed for accuracy per second on 28–64 px images on a CPU: a full-resolution 32-filter stem (one input
    # channel: cheap) pooled at once, two 3x3 convs of 32 at half and two of 64 at a quarter resolution, pools
    # before BatchNorm + ReLU, no dense layer; trained with the FAST recipe in schema.py (one-cycle SGD, label
    # smoothing, flip + flip TTA). The measurements behind it: benchmarks/results/custom_presets.md.
    "fast": [
        {"conv": 32}, "maxpool", "batchnorm", "relu",
        {"conv": 32}, "batchnorm", "relu", {"conv": 32}, "maxpool", "batchnorm", "relu",
        {"conv": 64}, "batchnorm", "relu", {"conv": 64}, "maxpool", "batchnorm", "relu",
        "flatten",
    ],
    # `fast`'s larger sibling, for ~10 minutes of a 2-core CPU with bf16 instructions on 28 px images: the same
    # design with 40/80 filters and a 128-filter conv on the last, 3x3 grid (cheap there: under a fifth of the 80s'
    # 7x7 pixels); the variants measured against it: benchmarks/results/custom_presets.md.
    "fast-large": [
        {"conv": 32}, "maxpool", "batchnorm", "relu",
        {"conv": 40}, "batchnorm", "relu", {"conv": 40}, "maxpool", "batchnorm", "relu",
        {"conv": 80}, "batchnorm", "relu", {"conv": 80}, "maxpool", "batchnorm", "relu",
        {"conv": 128}, "batchnorm", "relu",
        "flatten",
    ],
}

assert tuple(PRESETS) == CUSTOM_PRESETS, "schema.CUSTOM_PRESETS names the presets defined here"

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU,
               "leakyrelu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
LAYER_NAMES = ["conv", "batchnorm", "maxpool", "avgpool", "dropout", "flatten", "gap", "dense",
               *ACTIVATIONS]


def _parse(layer: Any) -> tuple[str, dict[str, Any]]:
    """'relu' -> ('relu', {}); {'conv': 32} -> ('conv', {'filters': 32}); {'conv': {...}} -> as is."""
    if isinstance(layer, str):
        return layer.lower(), {}
    if isinstance(layer, dict) and len(layer) == 1:
        (name, args), = layer.items()
        name = str(name).lower()
        if isinstance(args, dict):
            return name, dict(args)
        if args is None:
            return name, {}
        first = {"conv": "filters", "dense": "units", "dropout": "rate", "maxpool": "size",
                 "avgpool": "size"}.get(name)
        if first is None:
            raise UserError(f"layer {name!r} takes no value (got {args!r})")
        return name, {first: args}
    raise UserError(f"bad layer {layer!r}: use a name like 'relu' or a mapping like {{conv: 32}}")


def _whole(layer: str, key: str, value: Any, minimum: int = 1) -> int:
    """A whole-number option of a layer (filters, kernel, stride, size, units), at least `minimum`."""
    try:
        number = int(value)
        whole = not isinstance(value, bool) and number == float(value)
    except (TypeError, ValueError, OverflowError):
        whole = False
    if value is None:
        raise UserError(f"layer {layer!r} needs {key}, e.g. {{{layer}: {{{key}: 32}}}}")
    if not whole or number < minimum:
        raise UserError(f"layer {layer!r}: {key} must be a whole number of at least {minimum}, got {value!r}")
    return number


def _rate(value: Any) -> float:
    """A dropout rate: a probability in [0, 1)."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = None
    if isinstance(value, bool) or rate is None or not 0 <= rate < 1:
        raise UserError(f"layer 'dropout': rate must be a number from 0 to below 1, got {value!r}")
    return rate


def _conv_padding(kernel: int, padding: Any) -> int:
    if padding in (None, "same"):
        return kernel // 2  # Keras 'same' for odd kernels
    if padding == "valid":
        return 0
    if isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return padding
    raise UserError(f"conv padding must be 'same', 'valid' or a number, got {padding!r}")


TRAIN_BYTES_PER_PARAM = 16  # float32 weights, gradients and Adam's two moments
MAX_MAP_BYTES_PER_IMAGE = 256 << 20  # one layer's output for one image: beyond this no batch trains anywhere


def build_layers(spec: Spec, in_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Build the layers of `spec` for inputs of shape (C, H, W), ending in Linear(num_classes). The spec is first
    built on the meta device (no memory): one too large to train here is an error with its figures, not an
    allocator's traceback."""
    import copy

    with torch.device("meta"):
        probe = _build(copy.deepcopy(spec), in_shape, num_classes)
    params = sum(p.numel() for p in probe.parameters())
    from ..machine import available_bytes

    available = available_bytes()
    if available is not None and params * TRAIN_BYTES_PER_PARAM > available:
        raise UserError(f"the layer spec has {params:,} parameters: about {params * TRAIN_BYTES_PER_PARAM / 2**30:.1f}"
                        f" GB to train (weights, gradients, Adam's moments), more than the {available / 2**30:.1f} GB "
                        "this machine has available: use fewer filters or units")
    return _build(spec, in_shape, num_classes)


def _build(spec: Spec, in_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    if not isinstance(spec, list) or not spec:
        raise UserError("a layer spec must be a non-empty list of layers")
    shape: tuple[int, ...] = tuple(in_shape)
    layers: list[nn.Module] = []
    for i, raw in enumerate(spec):
        name, args = _parse(raw)
        try:
            module, shape = _make_layer(name, args, shape)
        except TypeError as e:
            raise UserError(f"layer {i + 1} ({name}): bad options {str(args)[:200]}: {str(e)[:200]}") from None
        map_bytes = 4 * math.prod(shape)
        if map_bytes > MAX_MAP_BYTES_PER_IMAGE:
            raise UserError(f"layer {i + 1} ({name}) outputs {shape} values per image ({map_bytes / 2**20:,.0f} MB): "
                            f"more than {MAX_MAP_BYTES_PER_IMAGE >> 20} MB per image cannot train at any batch size")
        layers.append(module)
    if len(shape) == 3:  # still a feature map: flatten before the classifier, like Keras would need
        layers.append(LayoutFlatten())
        shape = (shape[0] * shape[1] * shape[2],)
    layers.append(nn.Linear(shape[0], num_classes))
    return FusingSequential(*pool_before_activation(layers))


def _make_layer(name: str, args: dict[str, Any], shape: tuple[int, ...]) -> tuple[nn.Module, tuple[int, ...]]:
    is_map = len(shape) == 3
    if name in ("conv", "maxpool", "avgpool", "batchnorm", "gap") and not is_map:
        raise UserError(f"layer {name!r} needs a feature map, but the input here is flat {shape}")
    if name == "conv":
        filters = _whole(name, "filters", args.pop("filters", None))
        kernel = _whole(name, "kernel", args.pop("kernel", 3))
        stride = _whole(name, "stride", args.pop("stride", 1))
        pad = _conv_padding(kernel, args.pop("padding", "same"))
        bias = bool(args.pop("bias", True))
        _no_more(name, args)
        c, h, w = shape
        h, w = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
        if h <= 0 or w <= 0:
            raise UserError(f"conv {kernel}×{kernel} stride {stride} leaves no pixels of a {shape[1]}×{shape[2]} map")
        return nn.Conv2d(c, filters, kernel, stride, pad, bias=bias), (filters, h, w)
    if name in ("maxpool", "avgpool"):
        size = _whole(name, "size", args.pop("size", 2))
        stride = _whole(name, "stride", args.pop("stride", size))
        _no_more(name, args)
        c, h, w = shape
        h, w = (h - size) // stride + 1, (w - size) // stride + 1
        if h <= 0 or w <= 0:
            raise UserError(f"{name} {size} leaves no pixels of a {shape[1]}×{shape[2]} map: input too small")
        pool = nn.MaxPool2d(size, stride) if name == "maxpool" else nn.AvgPool2d(size, stride)
        return pool, (c, h, w)
    if name == "batchnorm":
        _no_more(name, args)
        return (nn.BatchNorm2d(shape[0]) if is_map else nn.BatchNorm1d(shape[0])), shape
    if name in ACTIVATIONS:
        _no_more(name, args)
        return ACTIVATIONS[name](), shape
    if name == "dropout":
        rate = _rate(args.pop("rate", 0.5))
        spatial = bool(args.pop("spatial", False))  # whole channels; read before _no_more, which rejects the rest
        _no_more(name, args)
        return (nn.Dropout2d(rate) if spatial else nn.Dropout(rate)), shape
    if name == "flatten":
        _no_more(name, args)
        size = 1
        for s in shape:
            size *= s
        return LayoutFlatten(), (size,)
    if name == "gap":
        _no_more(name, args)
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), (shape[0],)
    if name == "dense":
        units = _whole(name, "units", args.pop("units", None))
        _no_more(name, args)
        if is_map:
            raise UserError("dense needs a flat input: add 'flatten' or 'gap' before it")
        return nn.Linear(shape[0], units), (units,)
    raise UserError(f"unknown layer {name!r}; known: {', '.join(LAYER_NAMES)}")


def _no_more(name: str, args: dict[str, Any]) -> None:
    if args:
        raise UserError(f"layer {name!r} has unknown option(s): {', '.join(args)}")


def load_spec(path: Path) -> Spec:
    """A YAML or JSON file holding a list of layers (or {layers: [...]})."""
    from ..documents import read_document

    data = read_document(path, "model spec")
    if isinstance(data, dict) and "layers" in data:
        data = data["layers"]
    if not isinstance(data, list):
        raise UserError(f"model spec {path} must be a list of layers (or a mapping with 'layers')")
    return data


def build_custom(name: str, spec: Spec, *, num_classes: int, in_chans: int, data_size: tuple[int, int],
                 classes: list[str]) -> Classifier:
    """A custom CNN trained from scratch at the data's own resolution and channels."""
    mean, std = (0.5,) * in_chans, (0.5,) * in_chans  # inputs centred to [-1, 1]
    meta = ModelMeta(name=name, num_classes=num_classes, in_chans=in_chans, data_size=tuple(data_size),
                     input_size=tuple(data_size), net_chans=in_chans, mean=mean, std=std,
                     classes=list(classes), spec=spec)
    return rebuild_custom(meta)


def rebuild_custom(meta: ModelMeta) -> Classifier:
    net = build_layers(json.loads(json.dumps(meta.spec)), (meta.net_chans, *meta.input_size), meta.num_classes)
    _init_like_keras(net)
    return Classifier(meta, net)


def _init_like_keras(net: nn.Module) -> None:
    """Glorot-uniform weights and zero biases: what the reports' Keras models started from."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def format_preset_table(shapes: tuple[tuple[int, int, int], ...] = ((1, 28, 28), (3, 32, 32)),
                        num_classes: int = 10) -> str:
    """name | layers | trainable parameters on typical inputs: what `cnnarena models` lists besides timm."""
    head = ("custom CNN (from scratch)", "layers", *(f"params {c}x{h}x{w}" for c, h, w in shapes))
    table = [head]
    for name, spec in PRESETS.items():
        layers = " ".join(_short(layer) for layer in spec)
        counts = [f"{count_parameters(build_layers(json.loads(json.dumps(spec)), shape, num_classes))[1]:,}"
                  for shape in shapes]
        table.append((name, layers, *counts))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def _short(layer: Any) -> str:
    """{'conv': {'filters': 32, 'stride': 2}} -> 'conv32/2'; 'batchnorm' -> 'bn'."""
    name, args = _parse(layer)
    if name == "conv":
        kernel = args.get("kernel", 3)
        return (f"conv{args['filters']}" + (f"k{kernel}" if kernel != 3 else "")
                + (f"/{args['stride']}" if args.get("stride", 1) != 1 else ""))
    if name == "dense":
        return f"dense{args['units']}"
    if name == "dropout":
        return f"drop{args.get('rate', 0.5)}"
    return {"batchnorm": "bn", "maxpool": "pool"}.get(name, name)
