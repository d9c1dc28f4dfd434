"""Deployment-side costs of a trained model: latency, throughput and training memory."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..evaluate.inference import measure_speed
from ..models.base import Classifier


def training_memory_bytes(model: Classifier, batch_size: int, device: torch.device, optimizer_slots: int) -> int:
    """Peak bytes one training step needs: measured by CUDA's allocator on a GPU; on a CPU, the estimate of
    `cpu_training_memory`. Frozen parameters (requires_grad False) get no gradient and no optimizer state:
    set the model's training-time freeze state before calling this."""
    model.train().to(device)
    if device.type == "cuda":
        x, y = _batch(model, batch_size, device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        F.cross_entropy(model(x), y).backward()
        peak = torch.cuda.max_memory_allocated(device) - start
        model.zero_grad(set_to_none=True)
        return int(peak)
    return sum(cpu_training_memory(model, batch_size, optimizer_slots).values())


def cpu_training_memory(model: Classifier, batch_size: int, optimizer_slots: int) -> dict[str, int]:
    """Bytes of one CPU training step, by kind: activations (what autograd saves for backward, measured with
    saved-tensor hooks), weights (parameters + buffers), grads and optimizer state (trainable parameters only).

    Saved tensors are counted by the storage they keep alive, once each: a tensor saved by two ops, or saved
    as two views (ReLU's output and the next Linear's flattened input), is one block of memory. Storages of
    the model's own parameters and buffers (a conv saves its weight) are the weights term, not activations.
    """
    model.train()
    device = next(model.parameters()).device
    x, y = _batch(model, batch_size, device)
    state: dict[int, int] = {}
    for t in (*model.parameters(), *model.buffers()):
        state.setdefault(_storage_key(t), _storage_bytes(t))
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in state:
            saved[key] = _storage_bytes(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return {"activations": sum(saved.values()), "weights": sum(state.values()), "grads": trainable,
            "optimizer": trainable * optimizer_slots}


def _batch(model: Classifier, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(batch_size, model.meta.in_chans, *model.meta.data_size, device=device)
    return x, torch.zeros(batch_size, dtype=torch.long, device=device)


def _storage_key(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # no plain storage (e.g. a tensor subclass): the tensor alone
        return -id(t)


def _storage_bytes(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return t.numel() * t.element_size()


def measure_model(model: Classifier, *, device: torch.device, train_batch_size: int, optimizer: str,
                  seconds: float = 1.5) -> dict[str, Any]:
    b1 = measure_speed(model, batch_size=1, device=device, seconds=seconds)
    b64 = measure_speed(model, batch_size=64, device=device, seconds=seconds)
    slots = {"adam": 2, "adamw": 2, "sgd": 1}.get(optimizer, 2)
    return {
        "latency_ms_b1": round(b1["latency_ms"], 3),
        "throughput_b64": round(b64["images_per_second"], 1),
        "train_memory_mb": round(training_memory_bytes(model, train_batch_size, device, slots) / 2**20, 1),
        "memory_method": "cuda peak allocated" if device.type == "cuda" else (
            "activations autograd saves (each storage once) + weights + grads and optimizer state of the "
            "trainable parameters"),
    }
