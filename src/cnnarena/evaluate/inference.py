"""Batched prediction without gradients, optional test-time augmentation (mirror, shifts), speed measurement."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..models.base import Classifier


def predict_logits(model: Classifier, images: torch.Tensor, *, batch_size: int = 1024,
                   device: torch.device | str | None = None, tta: bool = False, shift: int = 0) -> torch.Tensor:
    """Logits (float32, on CPU) for uint8 N×C×H×W images. `tta` averages the probabilities of the image and its
    mirror, and with `shift` also of the image moved that many pixels left, right, up and down (reflect-padded, as
    training's translate pads), each with its mirror."""
    return predict_views(model, images, batch_size=batch_size, device=device, tta=tta, shift=shift)[0]


@torch.inference_mode()
def predict_views(model: Classifier, images: torch.Tensor, *, batch_size: int = 1024,
                  device: torch.device | str | None = None, tta: bool = False,
                  shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """predict_logits' logits, and the logits of the image alone: what one forward pass gives, as an exported
    model predicts (the same tensor without `tta`). The image alone is TTA's first view, so it costs nothing."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    out, plain = [], []
    for lo in range(0, images.shape[0], batch_size):
        x = images[lo:lo + batch_size].to(device).float().div_(255.0)
        if tta:
            probs, views = torch.zeros(()), 0
            for view in tta_views(x, shift):  # one view at a time: a big image's batch is large
                logits = model(view).float()
                if views == 0:
                    plain.append(logits.cpu())
                probs, views = probs + logits.softmax(1), views + 1
            out.append(probs.div_(views).log_().cpu())
        else:
            out.append(model(x).float().cpu())
    if not out:
        return (torch.empty(0, model.meta.num_classes),) * 2
    logits = torch.cat(out)
    return logits, (torch.cat(plain) if tta else logits)


def applied_shift(shift: int, size: tuple[int, int]) -> int:
    """The shift the views use on images of `size` (H, W): none when it is as large as the image."""
    return shift if 0 < shift < min(size) else 0


def tta_views(x: torch.Tensor, shift: int = 0) -> Iterator[torch.Tensor]:
    """The batch and its mirror; with `shift` (smaller than the image), also the batch moved `shift` pixels left,
    right, up and down, each with its mirror."""
    h, w = x.shape[-2:]
    s = applied_shift(shift, (h, w))
    padded = F.pad(x, (s,) * 4, mode="reflect") if s else x
    for dy, dx in ((0, 0), (0, -s), (0, s), (-s, 0), (s, 0)) if s else ((0, 0),):
        view = x if dy == dx == 0 else padded[..., s + dy:s + dy + h, s + dx:s + dx + w]
        yield view
        yield view.flip(3)


@torch.inference_mode()
def measure_speed(model: Classifier, *, batch_size: int, device: torch.device | str = "cpu",
                  seconds: float = 2.0, warmup: int = 3) -> dict[str, float]:
    """Images/second and mean latency per batch for random inputs at the model's data size."""
    device = torch.device(device)
    model.eval().to(device)
    x = torch.rand(batch_size, model.meta.in_chans, *model.meta.data_size, device=device)
    for _ in range(warmup):
        model(x)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        model(x)
        n += 1
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and n >= 3:
            break
    return {"batch_size": batch_size, "latency_ms": 1000 * elapsed / n, "images_per_second": n * batch_size / elapsed}
