"""Batched prediction without gradients, optional flip test-time augmentation, speed measurement."""

from __future__ import annotations

import time

import torch

from ..models.base import Classifier


@torch.inference_mode()
def predict_logits(model: Classifier, images: torch.Tensor, *, batch_size: int = 1024,
                   device: torch.device | str | None = None, tta: bool = False) -> torch.Tensor:
    """Logits (float32, on CPU) for uint8 N×C×H×W images; `tta` averages with the mirrored image."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    out = []
    for lo in range(0, images.shape[0], batch_size):
        x = images[lo:lo + batch_size].to(device).float().div_(255.0)
        logits = model(x).float()
        if tta:
            logits = (logits.softmax(1) + model(x.flip(3)).float().softmax(1)).div_(2).log_()
        out.append(logits.cpu())
    return torch.cat(out) if out else torch.empty(0, model.meta.num_classes)


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
