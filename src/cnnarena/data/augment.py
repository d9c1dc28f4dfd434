"""Augmentation as whole-batch tensor operations, on whatever device the batch is on.

Each op draws one random vector per batch (not per-sample Python) and applies it with
broadcasting, gather or a single grid_sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment_spec import PRESETS, AugmentConfig, parse_augment  # noqa: F401 - re-exported


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=g) * (hi - lo) + lo).to(device)


def flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mask = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(3), x)


def translate(x: torch.Tensor, pixels: int, g: torch.Generator) -> torch.Tensor:
    """Per-sample integer shifts via one gather from a reflect-padded batch."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * pixels + 1, (n, 1), generator=g).to(x.device)
    dx = torch.randint(0, 2 * pixels + 1, (n, 1), generator=g).to(x.device)
    rows = (torch.arange(h, device=x.device).view(1, h) + dy).view(n, 1, h, 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + dx).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, chans, rows, cols]


def affine(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Rotation, zoom and shear in one grid_sample."""
    n, dev = x.shape[0], x.device
    angle = _uniform(n, -cfg.rotation, cfg.rotation, g, dev) * (math.pi / 180)
    scale = _uniform(n, 1 - cfg.zoom, 1 + cfg.zoom, g, dev)
    shear = _uniform(n, -cfg.shear, cfg.shear, g, dev) * (math.pi / 180)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + torch.tan(shear) * cos
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    if cfg.brightness:
        x = x * _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, g, dev).view(-1, 1, 1, 1)
    if cfg.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = mean + (x - mean) * _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g, dev).view(-1, 1, 1, 1)
    if cfg.saturation and x.shape[1] == 3:
        gray = x.mean(dim=1, keepdim=True)
        x = gray + (x - gray) * _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, g, dev).view(-1, 1, 1, 1)
    return x.clamp_(0, 1)


def erase(x: torch.Tensor, probability: float, g: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al., 2017) drawn per image with torchvision's RandomErasing ranges: with
    `probability`, a rectangle of 2-33% of the image's area and aspect ratio 0.3-3.3 (clamped to the image where
    torchvision redraws) is set to 0, black, as the augmentations run before normalisation."""
    n, _, h, w = x.shape
    area = torch.rand(n, generator=g) * 0.31 + 0.02
    aspect = torch.exp(torch.rand(n, generator=g) * math.log(3.3 / 0.3) + math.log(0.3))
    tall = (area * aspect).sqrt().mul(h).round().clamp(1, h)
    wide = (area / aspect).sqrt().mul(w).round().clamp(1, w)
    top = (torch.rand(n, generator=g) * (h - tall + 1)).floor()
    left = (torch.rand(n, generator=g) * (w - wide + 1)).floor()
    chosen = torch.rand(n, generator=g) < probability
    # five numbers an image go to the batch's device, not an n x h x w mask
    top, tall, left, wide, chosen = (v.to(x.device).view(n, 1) for v in (top, tall, left, wide, chosen))
    rows, cols = torch.arange(h, device=x.device).view(1, h), torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= top) & (rows < top + tall) & chosen
    in_cols = (cols >= left) & (cols < left + wide)
    return x.masked_fill(in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w), 0.0)


class BatchAugment:
    """Callable(batch, generator) -> augmented batch, built from an AugmentConfig."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        c = self.cfg
        if c.flip:
            x = flip(x, g)
        if c.translate:
            x = translate(x, c.translate, g)
        if c.rotation or c.zoom or c.shear:
            x = affine(x, c, g)
        if c.brightness or c.contrast or c.saturation:
            x = colour(x, c, g)
        if c.erase:
            x = erase(x, c.erase, g)
        return x


def build_augment(cfg: AugmentConfig) -> BatchAugment | None:
    return BatchAugment(cfg) if cfg.active else None
