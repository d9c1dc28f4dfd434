"""The wrapper every model lives in: input adaptation + network, with the metadata to rebuild it.

Models take float images in [0, 1] at the dataset's stored resolution (N×C×H×W). The adapter does
what differs between networks - channel count, resolution, normalisation - on the batch, on the
device, so the data pipeline, export and serving never need to know which network they feed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FAMILIES = ("custom", "pretrained")


@dataclass
class ModelMeta:
    """Everything needed to rebuild a model from a checkpoint (stored as JSON beside the weights)."""

    name: str  # registry name: a custom preset, "custom" (spec), or a pretrained backbone name
    num_classes: int
    in_chans: int  # channels of the data the model is fed
    data_size: tuple[int, int]  # (H, W) of the data the model is fed
    input_size: tuple[int, int]  # (H, W) the network itself runs at (resized to by the adapter)
    net_chans: int  # channels the network itself expects (grayscale is repeated to 3 when needed)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] = field(default_factory=list)
    spec: list[dict[str, Any]] | None = None  # custom layer spec, when name is a custom model
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific options (head, timm name...)
    family: str = ""  # "custom" (trained from scratch) or "pretrained" (a backbone); "" = derive (older files)

    def __post_init__(self) -> None:
        if not self.family:
            self.family = "custom" if self.spec is not None else "pretrained"
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}")

    @property
    def is_pretrained(self) -> bool:
        return self.family == "pretrained"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelMeta:
        d = dict(d)
        for key in ("data_size", "input_size"):  # a hand-edited model.json: one line naming the key, not a traceback
            d[key] = _side_pair(d[key], key)
        for key in ("num_classes", "in_chans", "net_chans"):
            d[key] = _count(d[key], key, 1 if key.endswith("chans") else 2, 3 if key.endswith("chans") else 100_000)
        d["mean"] = _statistics(d["mean"], "mean", d["net_chans"], positive=False)
        d["std"] = _statistics(d["std"], "std", d["net_chans"], positive=True)
        d["classes"] = _class_names(d.get("classes", []), d["num_classes"])
        return cls(**d)


def _side_pair(value: Any, key: str) -> tuple[int, int]:
    """(height, width): two whole numbers of pixels from 1 to 4096 (ValueError naming the key otherwise)."""
    if not (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in value)):
        raise ValueError(f"{key} must be [height, width] in pixels from 1 to 4096, got {value!r}")
    return tuple(value)


def _count(value: Any, key: str, low: int, high: int) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise ValueError(f"{key} must be a whole number from {low} to {high:,}, got {value!r}")
    return value


def _statistics(value: Any, key: str, channels: int, positive: bool) -> tuple[float, ...]:
    """Per-channel normalisation: one finite number per channel (or three for RGB statistics a grayscale network
    averages), std above zero (it divides)."""
    import math

    ok = (isinstance(value, list | tuple) and len(value) in {channels, 3}
          and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
          and (not positive or all(v > 0 for v in value)))
    if not ok:
        kind = "positive" if positive else "finite"
        raise ValueError(f"{key} must be {channels} {kind} number(s), one per channel, got {value!r}")
    return tuple(float(v) for v in value)


def _class_names(value: Any, num_classes: int) -> list[str]:
    """[] (an older file) or one distinct text name per class."""
    if value in ([], None):
        return []
    if not (isinstance(value, list) and len(value) == num_classes and all(isinstance(v, str) for v in value)
            and len(set(value)) == num_classes):
        raise ValueError(f"classes must be {num_classes} distinct names (num_classes), got {str(value)[:80]}")
    return list(value)


class InputAdapter(nn.Module):
    """[0,1] images at data resolution -> normalised tensor the network expects."""

    def __init__(self, in_chans: int, net_chans: int, input_size: tuple[int, int],
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if in_chans not in (1, 3) or net_chans not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {in_chans}->{net_chans}")
        self.in_chans, self.net_chans = in_chans, net_chans
        self.input_size = tuple(input_size)
        mean_t = torch.tensor(mean, dtype=torch.float32)
        std_t = torch.tensor(std, dtype=torch.float32)
        if net_chans == 1 and mean_t.numel() == 3:  # RGB statistics for a grayscale network
            mean_t, std_t = mean_t.mean(0, keepdim=True), std_t.mean(0, keepdim=True)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1).expand(1, net_chans, 1, 1).clone())
        self.register_buffer("std", std_t.view(1, -1, 1, 1).expand(1, net_chans, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_chans == 1 and self.net_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        elif self.in_chans == 3 and self.net_chans == 1:
            x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, True)
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=False)
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """adapter -> net. `net` maps the normalised batch to logits (N×num_classes)."""

    def __init__(self, meta: ModelMeta, net: nn.Module) -> None:
        super().__init__()
        self.meta = meta
        self.adapter = InputAdapter(meta.in_chans, meta.net_chans, meta.input_size, meta.mean, meta.std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapter(x))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
