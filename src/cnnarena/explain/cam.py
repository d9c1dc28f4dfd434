"""Class activation maps of any cnnarena model, computed by the grad-cam library (pytorch-grad-cam).

What is ours: choosing the layer (the last feature map that still has some resolution, see `pick_layer`) and
feeding the model as it was trained (uint8 images at the data's size; the model's adapter resizes and normalises).
The maps come back at the data's size, each scaled to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import UserError

# --method name -> grad-cam class. The first ones need one forward and backward pass per batch; scorecam and
# ablationcam run the model once per channel of the layer (hundreds of passes per image: slow on a CPU).
METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "hirescam": "HiResCAM", "xgradcam": "XGradCAM",
           "layercam": "LayerCAM", "eigencam": "EigenCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}
FAST_METHODS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam")
MIN_SIDE = 4  # a map of 2x2 cells says little about where: take an earlier layer that still has 4x4 or more


@dataclass(frozen=True)
class Layer:
    name: str  # as in model.named_modules(), e.g. "net.7" or "net.backbone.blocks.5"
    module: nn.Module
    shape: tuple[int, ...]  # its output for one image: C x H x W


@dataclass
class Explanation:
    heat: np.ndarray  # N x H x W float32 in [0, 1], at the data's size
    probs: np.ndarray  # N x K softmax of the same forward pass
    targets: list[int]  # the class each map explains
    layer: str
    method: str


def feature_maps(model: nn.Module, sample: torch.Tensor) -> list[Layer]:
    """Every module of the network whose output is a 4-D feature map, in the order they run (one eval forward)."""
    found: list[tuple[str, nn.Module, torch.Tensor]] = []
    net = getattr(model, "net", model)  # the adapter's resized input is not a feature map
    prefix = "net." if net is not model else ""

    def hook(name):
        def record(module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                found.append((name, module, output))
        return record

    handles = [m.register_forward_hook(hook(prefix + n)) for n, m in net.named_modules() if n]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(sample)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    # An in-place module (ReLU(inplace=True) after a pooling) returns the tensor it was given: the map a module
    # hands on is the one the last module writing into that tensor produced. Keep that last writer only.
    last_writer: dict[int, int] = {}
    for i, (_, _, out) in enumerate(found):
        last_writer[out.data_ptr()] = i
    return [Layer(name, module, tuple(out.shape[1:])) for i, (name, module, out) in enumerate(found)
            if last_writer[out.data_ptr()] == i]


def pick_layer(model: nn.Module, sample: torch.Tensor, name: str | None = None) -> Layer:
    """The layer to explain: `name` if given (with or without the "net." prefix), else the last feature map at
    least MIN_SIDE cells on a side (the last one of all where none is), a block's output where the network has
    blocks."""
    layers = feature_maps(model, sample)
    if not layers:
        raise UserError("this model has no convolutional feature map to explain (no layer outputs N x C x H x W)")
    if name:
        by_name = {layer.name: layer for layer in layers}
        chosen = by_name.get(name) or by_name.get(f"net.{name}")
        if chosen is None:
            if name in dict(model.named_modules()) or f"net.{name}" in dict(model.named_modules()):
                raise UserError(f"--layer {name} does not output a feature map (N x C x H x W); feature maps: "
                                f"{_listing(layers)}")
            raise UserError(f"--layer {name}: no such layer; feature maps: {_listing(layers)}")
        return chosen
    wide = [layer for layer in layers if min(layer.shape[1:]) >= MIN_SIDE] or layers
    # a block's output (a module holding convolutions: a residual block, a stage) rather than a map inside a block
    blocks = [layer for layer in wide if not isinstance(layer.module, nn.Conv2d)
              and any(isinstance(m, nn.Conv2d) for m in layer.module.modules())]
    return (blocks or wide)[-1]


def _listing(layers: list[Layer], show: int = 8) -> str:
    tail = layers[-show:]
    more = f"{len(layers) - show} earlier ones, then " if len(layers) > show else ""
    return more + ", ".join(f"{layer.name} ({'x'.join(map(str, layer.shape))})" for layer in tail)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"unknown --method {method!r}: use one of {', '.join(METHODS)}")
    return method


def explain(model: nn.Module, images: torch.Tensor, *, method: str = "gradcam", targets: list[int] | None = None,
            layer: str | Layer | None = None, batch_size: int = 32) -> Explanation:
    """Heat maps for uint8 N x C x H x W `images` (as decoded for the model); each map explains `targets[i]`, by
    default the class the model predicts. The model's trainable flags and mode are left as they were."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    check_method(method)
    device = next(model.parameters()).device
    x_all = images.to(device).float().div(255.0)
    chosen = layer if isinstance(layer, Layer) else pick_layer(model, x_all[:1], layer)
    cam_class = getattr(pytorch_grad_cam, METHODS[method])
    was_training = model.training
    heat, probs, explained = [], [], []
    try:
        with cam_class(model=model, target_layers=[chosen.module]) as cam:
            # the input takes part in autograd: a frozen backbone's layers need no gradients for training, the map
            # does (the subclasses do not pass this option on to BaseCAM)
            cam.compute_input_gradient = True
            for lo in range(0, len(x_all), batch_size):
                x = x_all[lo:lo + batch_size]
                wanted = None if targets is None else targets[lo:lo + batch_size]
                cam_targets = None if wanted is None else [ClassifierOutputTarget(int(t)) for t in wanted]
                maps = cam(input_tensor=x, targets=cam_targets)
                with torch.no_grad():
                    p = cam.outputs.detach().float().softmax(1).cpu().numpy()
                heat.append(np.asarray(maps, dtype=np.float32).reshape(len(x), *x.shape[-2:]))
                probs.append(p)
                explained += list(wanted) if wanted is not None else p.argmax(1).tolist()
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return Explanation(np.concatenate(heat), np.concatenate(probs), [int(t) for t in explained], chosen.name, method)


def class_index(classes: list[str], target: str) -> int:
    """--target CLASS: a class name (or its index) -> its index; a clear error listing the classes otherwise."""
    if target in classes:
        return classes.index(target)
    if target.isascii() and target.isdigit() and int(target) < len(classes):  # "²" is a digit to str.isdigit
        return int(target)
    shown = ", ".join(classes[:20]) + (", …" if len(classes) > 20 else "")
    raise UserError(f"--target {target!r} is not a class of this model: {shown}")
