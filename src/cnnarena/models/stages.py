"""A pretrained backbone's stages, input side first: which to freeze, which to train, at which learning rate
(fastai's freeze / unfreeze and layer-wise LR decay)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UserError
from .base import Classifier
from .pretrained import PretrainedNet


def pretrained_net(model: Classifier) -> PretrainedNet:
    if not isinstance(getattr(model, "net", None), PretrainedNet):
        raise UserError(f"'{model.meta.name}' has no pretrained backbone: freezing applies to pretrained models")
    return model.net


def backbone_stages(backbone: nn.Module) -> list[list[str]]:
    """Parameter names of the backbone grouped into stages, input side first.

    A stage ends at each feature_info module (timm's stride-reduction points: resnet's layer1..4,
    efficientnet's block groups, densenet's dense blocks); layers after the last one (conv_head, norm5,
    vgg's fc1/fc2) belong to the last stage. Without feature_info, timm's coarse group_matcher decides.
    """
    order = {name: i for i, (name, _) in enumerate(backbone.named_modules())}
    ends = _feature_ends(backbone, order)
    if not ends:
        return _matcher_stages(backbone)
    stages: list[list[str]] = [[] for _ in ends]
    for pname, _ in backbone.named_parameters():
        owner = order[pname.rpartition(".")[0]]
        stages[next((k for k, end in enumerate(ends) if owner <= end), len(ends) - 1)].append(pname)
    return [s for s in stages if s]


def _feature_ends(backbone: nn.Module, order: dict[str, int]) -> list[int]:
    """Index (in named_modules order) of the last submodule of each feature_info module."""
    info = getattr(backbone, "feature_info", None)
    if not isinstance(info, list):
        return []
    ends = []
    for entry in info:
        module = entry.get("module") if isinstance(entry, dict) else None
        if module in order:
            ends.append(max(i for n, i in order.items() if n == module or n.startswith(module + ".")))
    return sorted(set(ends))


def _matcher_stages(backbone: nn.Module) -> list[list[str]]:
    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        return [[n for n, _ in backbone.named_parameters()]]
    from timm.models._manipulate import group_parameters

    groups = group_parameters(backbone, matcher(coarse=True))
    return [groups[k] for k in sorted(groups)]


def set_trainable(model: Classifier, stages: int | None, *, bn_frozen: bool = False) -> None:
    """The one freezing function: the head trains, and of the backbone exactly its last `stages` stages
    (0: the backbone is frozen, None: all of it); earlier stages get no gradients and their BatchNorm keeps its
    running statistics (eval mode while training). bn_frozen: every backbone BatchNorm, trainable or not,
    normalises with its running statistics and keeps them (its affine weights still train when unfrozen);
    False: unfrozen BatchNorm uses batch statistics."""
    net = pretrained_net(model)
    if stages is not None and stages < 0:
        raise UserError(f"unfreeze needs a number of stages >= 0, got {stages}")
    backbone_stage_names = backbone_stages(net.backbone)
    keep = len(backbone_stage_names) if stages is None else min(stages, len(backbone_stage_names))
    trainable = {n for stage in backbone_stage_names[len(backbone_stage_names) - keep:] for n in stage}
    for pname, param in net.backbone.named_parameters():
        param.requires_grad_(pname in trainable)
    net.head.requires_grad_(True)
    net.bn_frozen = bool(bn_frozen)
    net.train(net.training)  # re-apply the BatchNorm rule to the current mode


def param_groups(model: Classifier, lr: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
    """Optimizer groups of trainable parameters: the head at `lr`, backbone stage i of n at lr*decay^(n-i)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if layer_decay is None:
        return [{"name": "all", "params": trainable, "lr": lr}]
    if not 0.0 < layer_decay <= 1.0:
        raise UserError(f"layer decay must be in (0, 1], got {layer_decay}")
    backbone = pretrained_net(model).backbone
    named = dict(backbone.named_parameters())
    stages = backbone_stages(backbone)
    groups = []
    for i, stage in enumerate(stages):
        params = [named[n] for n in stage if named[n].requires_grad]
        if params:
            groups.append({"name": f"backbone.stage{i}", "params": params,
                           "lr": lr * layer_decay ** (len(stages) - i)})
    in_backbone = {id(p) for p in backbone.parameters()}
    rest = [p for p in trainable if id(p) not in in_backbone]
    if rest:
        groups.append({"name": "head", "params": rest, "lr": lr})
    return groups
