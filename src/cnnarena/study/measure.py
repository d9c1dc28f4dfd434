"""Deployment-side costs of a trained model: latency, throughput and training memory."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..evaluate.inference import measure_speed
from ..models.base import Classifier


def training_memory_bytes(model: Classifier, batch_size: int, device: torch.device, optimizer_slots: int) -> int:
    """Peak bytes one training step needs: measured by CUDA's allocator on a GPU; on a CPU, the sum of
    what autograd saves for backward (measured with saved-tensor hooks) + weights, grads, optimizer state."""
    model.train().to(device)
    x = torch.rand(batch_size, model.meta.in_chans, *model.meta.data_size, device=device)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        F.cross_entropy(model(x), y).backward()
        peak = torch.cuda.max_memory_allocated(device) - start
        model.zero_grad(set_to_none=True)
        return int(peak)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        saved[id(t)] = t.numel() * t.element_size()  # keyed by id: a tensor saved twice counts once
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return int(sum(saved.values()) + params + trainable * (1 + optimizer_slots))


def measure_model(model: Classifier, *, device: torch.device, train_batch_size: int, optimizer: str,
                  seconds: float = 1.5) -> dict[str, Any]:
    b1 = measure_speed(model, batch_size=1, device=device, seconds=seconds)
    b64 = measure_speed(model, batch_size=64, device=device, seconds=seconds)
    slots = {"adam": 2, "adamw": 2, "sgd": 1}.get(optimizer, 2)
    return {
        "latency_ms_b1": round(b1["latency_ms"], 3),
        "throughput_b64": round(b64["images_per_second"], 1),
        "train_memory_mb": round(training_memory_bytes(model, train_batch_size, device, slots) / 2**20, 1),
        "memory_method": "cuda peak allocated" if device.type == "cuda" else "autograd saved tensors + weights",
    }
