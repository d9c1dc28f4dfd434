"""A Keras-style model.summary(): layer, output shape, parameters, and the totals."""

from __future__ import annotations

import torch
from torch import nn

from .base import Classifier


def _leaf_layers(module: nn.Module, depth: int, prefix: str = "") -> list[tuple[str, nn.Module]]:
    children = list(module.named_children())
    if depth == 0 or not children:
        return [(prefix, module)]
    out = []
    for name, child in children:
        out += _leaf_layers(child, depth - 1, f"{prefix}.{name}" if prefix else name)
    return out


@torch.no_grad()
def summarize(model: Classifier, input_shape: tuple[int, int, int], depth: int = 1) -> str:
    """Table of the network's layers (down to `depth` levels) for one input of shape C×H×W."""
    layers = _leaf_layers(model.net, depth)
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=id(m): shapes.__setitem__(k, tuple(o.shape[1:])))
             for _, m in layers if isinstance(m, nn.Module)]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows = []
    for name, m in layers:
        params = sum(p.numel() for p in m.parameters())
        shape = shapes.get(id(m))
        shape_text = "—" if shape is None else "(None, " + ", ".join(map(str, shape)) + ")"
        rows.append((f"{name} ({type(m).__name__})", shape_text, f"{params:,}"))
    w0 = max(len("Layer (type)"), *(len(r[0]) for r in rows))
    w1 = max(len("Output Shape"), *(len(r[1]) for r in rows))
    w2 = max(len("Param #"), *(len(r[2]) for r in rows))
    line = "─" * (w0 + w1 + w2 + 6)
    adapter = f"input {input_shape[0]}×{input_shape[1]}×{input_shape[2]} -> network input " \
              f"{model.meta.net_chans}×{model.meta.input_size[0]}×{model.meta.input_size[1]} (normalised)"
    out = [f'Model: "{model.meta.name}"   {adapter}', line,
           f"{'Layer (type)':<{w0}}   {'Output Shape':<{w1}}   {'Param #':>{w2}}", line]
    out += [f"{a:<{w0}}   {b:<{w1}}   {c:>{w2}}" for a, b, c in rows]
    total = sum(p.numel() for p in model.net.parameters())
    trainable = sum(p.numel() for p in model.net.parameters() if p.requires_grad)
    bn_stats = sum(m.running_mean.numel() + m.running_var.numel() for m in model.net.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)
    out += [line, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}",
            f"BatchNorm moving statistics: {bn_stats:,} (Keras counts these as non-trainable params: "
            f"{total + bn_stats:,} in total)", line]
    return "\n".join(out)


MAX_SIDE = 4096  # far beyond any dataset cnnarena trains on; the table allocates no weights or activations
MAX_CLASSES = 100_000


def summary_table(model: str, input: str, *, classes: int = 10, depth: int = 1,  # noqa: A002 - the CLI's name
                  input_size: int | None = None) -> str:
    """`cnnarena summary`: the table of `model` on C×H×W inputs (e.g. "1x28x28"), checked first."""
    from ..errors import UserError
    from .registry import create_model

    try:
        c, h, w = (int(v) for v in input.lower().replace("×", "x").split("x"))
    except ValueError:
        raise UserError(f"--input must look like 3x32x32, got {input!r}") from None
    if c not in (1, 3):
        raise UserError(f"--input {input}: channels must be 1 (grayscale) or 3 (RGB), got {c}")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise UserError(f"--input {input}: height and width must be 1 to {MAX_SIDE} pixels")
    if not 1 <= classes <= MAX_CLASSES:
        raise UserError(f"--classes must be 1 to {MAX_CLASSES:,}, got {classes}")
    if input_size is not None and not 1 <= input_size <= MAX_SIDE:
        raise UserError(f"--input-size must be 1 to {MAX_SIDE} pixels, got {input_size}")

    def table() -> str:
        net = create_model(model, num_classes=classes, in_chans=c, data_size=(h, w),
                           classes=[str(i) for i in range(classes)], pretrained=False, input_size=input_size)
        return summarize(net, (c, h, w), depth=depth)

    try:  # shapes and counts only: on the meta device no weight or activation is allocated, whatever the size
        with torch.device("meta"):
            return table()
    except (NotImplementedError, RuntimeError):  # an operation without a meta implementation: compute it for real
        return table()
