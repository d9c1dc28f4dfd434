"""ImageNet-pretrained backbones (timm, plus torchvision's GoogLeNet) with a new head, and their freezing.

A pretrained model is `Classifier(adapter -> PretrainedNet(backbone -> head))`. The backbone is a timm
model created with num_classes=0, so it ends in global average pooling and returns features; the head
is new (optional hidden Linear+ReLU+Dropout layers, then Linear to num_classes). Which weights the
backbone gets is decided in `weights.py`; this module builds the network and carries out that plan.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import UserError
from .base import Classifier, ModelMeta
from .resolution import auto_input_size
from .weights import (
    LITE0_INPUT_SIZE,
    LITE0_MEAN_STD,
    LITE0_PACKAGE,
    LITE0_TIMM_NAME,
    WeightsPlan,
    WeightsSpec,
    hub_reachable,
    load_backbone_state,
    no_weights_message,
    offline_source,
    package_state_dict,
    read_state_file,
    resolve_weights,
)

GOOGLENET = "torchvision.googlenet"  # timm has no GoogLeNet: torchvision's, cut the timm way

# The networks the reports used -> timm names. Any other timm model name works too.
ALIASES: dict[str, str] = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "densenet121": "densenet121",
    "googlenet": GOOGLENET,
    "inception_v3": "inception_v3",
    "inception_resnet_v2": "inception_resnet_v2",
    "vgg16": "vgg16",
    "mobilenet_v2": "mobilenetv2_100",
    "mobilenet_v3": "mobilenetv3_large_100",
    "efficientnet_b0": "efficientnet_b0",
    "efficientnet_lite0": "tf_efficientnet_lite0",
}

# Known smallest inputs, only to make the "too small" message helpful (the check itself is generic).
MIN_INPUT_SIZE = {"inception_v3": 75, "inception_resnet_v2": 75}


# --- names ------------------------------------------------------------------------------------------------

def _alias_key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def is_pretrained_name(name: str) -> bool:
    """True for an alias, torchvision's GoogLeNet, or any timm model name (optionally with a .tag)."""
    try:
        resolve_name(name)
    except UserError:
        return False
    return True


def resolve_name(name: str) -> str:
    """Alias or timm name -> the name to build; unknown names get a UserError with close matches."""
    if _alias_key(name) in ALIASES:
        return ALIASES[_alias_key(name)]
    if name == GOOGLENET:
        return name
    if timm.is_model(name):
        _check_tag(name)
        return name
    choices = [*ALIASES, *timm.list_models()]
    close = difflib.get_close_matches(_alias_key(name), choices, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UserError(f"unknown model '{name}': use one of {', '.join(ALIASES)} or any timm model name "
                    f"(`cnnarena models` lists them){hint}")


def _check_tag(name: str) -> None:
    if "." not in name:
        return
    try:
        timm.models.get_pretrained_cfg(name)
    except RuntimeError:
        arch, _, tag = name.partition(".")
        raise UserError(f"timm model '{arch}' has no pretrained tag '{tag}': "
                        f"pick one of {', '.join(timm.list_pretrained(arch + '.*')) or arch}") from None


# --- the network ------------------------------------------------------------------------------------------

class GoogLeNetBackbone(torchvision.models.GoogLeNet):
    """torchvision's GoogLeNet without aux heads and classifier: returns 1024 pooled features like timm.

    Its ImageNet weights expect inputs scaled to [-1, 1] (torchvision's transform_input does that
    internally); here the adapter does it with mean = std = 0.5 instead.
    """

    num_features = 1024

    def __init__(self) -> None:
        super().__init__(num_classes=1000, aux_logits=False, transform_input=False, init_weights=False)
        self.dropout = nn.Identity()  # dropout belongs to the head
        self.fc = nn.Identity()
        self.feature_info = [dict(module=m, reduction=r) for m, r in
                             (("conv1", 2), ("conv3", 4), ("inception3b", 8), ("inception4e", 16),
                              ("inception5b", 32))]
        self.pretrained_cfg = dict(
            url=torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.url, input_size=(3, 224, 224),
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_classes=1000, classifier=("fc", "aux1", "aux2"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._forward(x)[0]


class PretrainedNet(nn.Module):
    """backbone (features) -> head (logits). BatchNorm of frozen backbone parts stays in eval mode.

    With `bn_frozen` set (fine-tuning's default, see `set_trainable`) every backbone BatchNorm
    stays in eval mode, trainable or not: it keeps normalising with its ImageNet running statistics.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.bn_frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> PretrainedNet:
        super().train(mode)
        if mode:
            apply_batchnorm_rule(self.backbone.modules(), self.bn_frozen)
        return self


def apply_batchnorm_rule(modules: Iterable[nn.Module], bn_frozen: bool) -> None:
    """After .train(): BatchNorm that is frozen (or all of it, with bn_frozen) goes back to eval mode.

    Frozen BN must not update its running statistics (fastai's "freeze" behaviour). bn_frozen extends
    that to trainable BN, as Keras' fine-tuning guide advises: switching an ImageNet BN from its running
    statistics to the statistics of small batches of a new domain shifts every feature the head learnt.
    """
    for module in modules:
        if isinstance(module, _BatchNorm) and (bn_frozen or _is_frozen(module)):
            module.eval()


def _is_frozen(module: nn.Module) -> bool:
    # a BN without affine parameters cannot be frozen this way and keeps training its statistics
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


def make_head(in_features: int, num_classes: int, hidden: Sequence[int] = (), dropout: float = 0.0) -> nn.Sequential:
    """Linear+ReLU(+Dropout) per hidden width, then Linear to num_classes (Dropout first when no hidden)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = width
    if not hidden and dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


def _create(arch: str, create_kwargs: dict[str, Any], **timm_kwargs: Any) -> nn.Module:
    if arch == GOOGLENET:
        return GoogLeNetBackbone()
    return timm.create_model(arch, num_classes=0, **create_kwargs, **timm_kwargs)


def feature_dim(backbone: nn.Module) -> int:
    # head_hidden_size covers pre-logits layers that stay in the backbone (vgg16's fc1/fc2, mobilenetv3's conv_head)
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


# --- configuration before building ------------------------------------------------------------------------

def weights_spec(arch: str) -> WeightsSpec:
    if arch == GOOGLENET:
        return WeightsSpec(arch, url=torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.url)
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        return WeightsSpec(arch)
    return WeightsSpec(arch, cfg.hf_hub_id, cfg.hf_hub_filename, cfg.url, bool(cfg.custom_load))


def default_input_size(arch: str) -> tuple[int, int]:
    if arch == GOOGLENET:
        return (224, 224)
    cfg = timm.models.get_pretrained_cfg(arch)
    size = cfg.input_size if cfg is not None else (3, 224, 224)
    return (int(size[1]), int(size[2]))


def _create_kwargs(arch: str, size: tuple[int, int]) -> dict[str, Any]:
    """Transformers with a fixed input size must be built at the size they will run at."""
    cfg = None if arch == GOOGLENET else timm.models.get_pretrained_cfg(arch)
    if cfg is not None and cfg.fixed_input_size and size != default_input_size(arch):
        return {"img_size": size[0] if size[0] == size[1] else list(size)}
    return {}


def _check_input_size(name: str, arch: str, size: tuple[int, int], create_kwargs: dict[str, Any]) -> None:
    """Run the backbone on the meta device (no memory, no compute) to reject sizes it cannot take."""
    if min(size) < 16 or max(size) > 2048:
        raise UserError(f"input size {size[0]}x{size[1]} is out of range: pick 16..2048 "
                        "(64-128 suits 28-32 px data)")
    try:
        _meta_forward(arch, create_kwargs, size)
    except TypeError:
        raise UserError(f"'{name}' only runs at its own input size {default_input_size(arch)}: "
                        "drop --input-size") from None
    except (RuntimeError, ValueError, AssertionError) as e:
        try:  # a model that cannot run on the meta device at all: nothing learnt, let it run for real
            _meta_forward(arch, {}, default_input_size(arch))
        except (RuntimeError, ValueError, AssertionError, NotImplementedError):
            return
        at_least = f" (needs at least {MIN_INPUT_SIZE[arch]})" if arch in MIN_INPUT_SIZE else ""
        reason = str(e).splitlines()[0][:120]
        raise UserError(f"input size {size[0]}x{size[1]} is too small for '{name}'{at_least}: "
                        f"pick a larger --input-size ({reason})") from None


def _chosen_size(arch: str, data_size: tuple[int, int]) -> tuple[int, int]:
    """models/resolution.py's rule; a backbone with a fixed input size (or one that cannot take the chosen size)
    keeps its own."""
    default = default_input_size(arch)
    cfg = None if arch == GOOGLENET else timm.models.get_pretrained_cfg(arch)
    if cfg is not None and cfg.fixed_input_size:
        return default
    size = auto_input_size(tuple(data_size), default, MIN_INPUT_SIZE.get(arch, 0))
    if size == default:
        return size
    try:
        _meta_forward(arch, {}, size)
    except (TypeError, RuntimeError, ValueError, AssertionError, NotImplementedError):
        return default
    return size


def _meta_forward(arch: str, create_kwargs: dict[str, Any], size: tuple[int, int]) -> None:
    with torch.device("meta"):
        backbone = _create(arch, create_kwargs).eval()
    backbone(torch.empty(1, 3, *size, device="meta"))  # outside the device context: much faster


# --- building ------------------------------------------------------------------------------------------------

def build_pretrained(name: str, *, num_classes: int, in_chans: int, data_size: tuple[int, int],
                     classes: list[str], pretrained: bool = True, weights: Path | str | None = None,
                     input_size: int | None = None, head_hidden: Sequence[int] = (),
                     head_dropout: float = 0.0) -> Classifier:
    """A Classifier around an (ImageNet-pretrained) backbone and a new head for `num_classes`."""
    arch = resolve_name(name)
    _validate(num_classes, in_chans, classes, head_hidden, head_dropout, pretrained, weights)
    size = (int(input_size), int(input_size)) if input_size is not None else _chosen_size(arch, data_size)
    create_kwargs = _create_kwargs(arch, size)
    if input_size is not None:
        _check_input_size(name, arch, size, create_kwargs)
    backbone, plan = _backbone_with_weights(name, arch, pretrained, weights, create_kwargs)
    cfg = backbone.pretrained_cfg
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if plan is not None and plan.kind == "package":
        mean = std = LITE0_MEAN_STD  # what the package's weights were trained with
        if input_size is None:
            size = auto_input_size(tuple(data_size), (LITE0_INPUT_SIZE, LITE0_INPUT_SIZE))
    dim = feature_dim(backbone)
    meta = ModelMeta(
        name=name, num_classes=num_classes, in_chans=in_chans, data_size=tuple(data_size), input_size=size,
        net_chans=3, mean=mean, std=std, classes=list(classes), family="pretrained",
        extra=dict(timm_name=arch, create_kwargs=create_kwargs, feature_dim=dim,
                   head_hidden=[int(w) for w in head_hidden], head_dropout=float(head_dropout),
                   weights_source=plan.label if plan is not None else "random"))
    net = PretrainedNet(backbone, make_head(dim, num_classes, head_hidden, head_dropout))
    return Classifier(meta, net)


def rebuild_pretrained(meta: ModelMeta) -> Classifier:
    """The exact architecture described by `meta`, randomly initialised: the caller loads a checkpoint."""
    extra = meta.extra
    backbone = _create(extra["timm_name"], dict(extra.get("create_kwargs", {})))
    head = make_head(feature_dim(backbone), meta.num_classes, extra.get("head_hidden", ()),
                     extra.get("head_dropout", 0.0))
    return Classifier(meta, PretrainedNet(backbone, head))


def _validate(num_classes: int, in_chans: int, classes: list[str], head_hidden: Sequence[int],
              head_dropout: float, pretrained: bool, weights: Path | str | None) -> None:
    if num_classes < 1:
        raise UserError(f"need at least one class, got num_classes={num_classes}")
    if classes and len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names for num_classes={num_classes}")
    if in_chans not in (1, 3):
        raise UserError(f"images must have 1 or 3 channels, got {in_chans}")
    if any(int(w) < 1 for w in head_hidden):
        raise UserError(f"head hidden layer widths must be positive, got {list(head_hidden)}")
    if not 0.0 <= head_dropout < 1.0:
        raise UserError(f"head dropout must be in [0, 1), got {head_dropout}")
    if weights is not None and not pretrained:
        raise UserError("--weights and --no-pretrained contradict each other: drop one")


def check_weights_available(name: str, weights: Path | str | None = None) -> None:
    """A UserError now, before any data is read, when the weights a run would load cannot be had (files are only
    looked at; the hub only asked whether it answers)."""
    if weights is not None:
        if not Path(weights).is_file():
            raise UserError(f"--weights {weights}: no such file")
        return
    spec = weights_spec(resolve_name(name))
    if not (spec.hf_hub_id or spec.url or spec.arch == LITE0_TIMM_NAME):
        raise UserError(f"timm publishes no pretrained weights for '{name}': pass --weights FILE "
                        "(safetensors or state dict) or use --no-pretrained")
    if offline_source(spec) is None and not hub_reachable(spec):
        raise UserError(no_weights_message(name))


def _backbone_with_weights(name: str, arch: str, pretrained: bool, weights: Path | str | None,
                           create_kwargs: dict[str, Any]) -> tuple[nn.Module, WeightsPlan | None]:
    if not pretrained:  # the one explicit way to random init
        return _create(arch, create_kwargs), None
    plan = resolve_weights(name, weights_spec(arch), weights)
    if plan.kind == "cache":
        return _from_cache(name, arch, create_kwargs, plan.path), plan
    if plan.kind == "hub":
        try:
            return _from_hub(name, arch, create_kwargs), plan
        except UserError:
            package = package_state_dict(arch)  # a blocked or flaky hub: real offline weights still beat none
            if package is None:
                raise
            plan = WeightsPlan("package", f"package:{LITE0_PACKAGE}", state_dict=package)
    # a user's file or the offline package: loaded exactly, by us
    assert plan.state_dict is not None
    backbone = _create(arch, create_kwargs)
    origin = f"weights file {plan.path}" if plan.kind == "file" else plan.label
    load_backbone_state(backbone, plan.state_dict, origin, arch, _classifier_prefixes(backbone))
    return backbone, plan


def _classifier_prefixes(backbone: nn.Module) -> tuple[str, ...]:
    names = backbone.pretrained_cfg.get("classifier") or ()
    return tuple(f"{n}." for n in ((names,) if isinstance(names, str) else names))


def _from_cache(name: str, arch: str, create_kwargs: dict[str, Any], path: Path | None) -> nn.Module:
    assert path is not None
    try:
        if arch == GOOGLENET:
            backbone = _create(arch, create_kwargs)
            load_backbone_state(backbone, read_state_file(path), f"cached {path}", arch,
                                _classifier_prefixes(backbone))
            return backbone
        # timm loads its own cache file: its checkpoint filters adapt e.g. position embeddings
        return _create(arch, create_kwargs, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    except (RuntimeError, OSError, ValueError) as e:
        raise UserError(f"cached weights {path} for '{name}' could not be loaded ({_first_line(e)}): "
                        "delete the file, pass --weights FILE or use --no-pretrained") from None


def _from_hub(name: str, arch: str, create_kwargs: dict[str, Any]) -> nn.Module:
    try:
        if arch == GOOGLENET:
            backbone = _create(arch, create_kwargs)
            state = torch.hub.load_state_dict_from_url(backbone.pretrained_cfg["url"], map_location="cpu",
                                                       check_hash=True, weights_only=True)
            load_backbone_state(backbone, state, "downloaded googlenet weights", arch,
                                _classifier_prefixes(backbone))
            return backbone
        return _create(arch, create_kwargs, pretrained=True)
    except (TypeError, AttributeError, NameError, KeyError, UserError):
        raise  # bugs, or already explained
    except Exception as e:  # network and HTTP errors come in many library-specific types
        raise UserError(f"downloading pretrained weights for '{name}' failed ({type(e).__name__}: "
                        f"{_first_line(e)}): retry, pass --weights FILE or use --no-pretrained") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


# --- listing --------------------------------------------------------------------------------------------------
