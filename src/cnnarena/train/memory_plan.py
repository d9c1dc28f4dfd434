"""How much memory a training will hold, and the batch it can run in a budget (gradient accumulation for the rest).

The estimate is measured, not guessed: one forward pass of a copy of the model at batch 2 counts the bytes autograd
saves for the backward pass (saved-tensor hooks) and, in eval mode, the largest input + output of any layer. Peak of
a training step = parameters + gradients + optimizer state + saved activations x batch x BACKWARD_FACTOR (the
backward pass holds gradients of the activations beside them); of evaluation, the largest layer's in + out x batch x
EVAL_FACTOR (a residual block keeps its input alive). The budget bounds the memory the process allocates (its
anonymous resident memory, machine.allocated_bytes; shared libraries' pages are not counted): what it already holds
(data, model, the Python runtime) is subtracted first.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..machine import allocated_bytes, available_bytes
from .options import parse_memory  # noqa: F401 - re-exported

GiB = 2**30
DEFAULT_CAP = 4 * GiB  # a laptop with 8 GB must survive the default
DEFAULT_SHARE = 0.6  # of the memory available when the run starts
BACKWARD_FACTOR = 1.6
EVAL_FACTOR = 2.5
PROBE_SIDE = 128
HEADROOM = 0.9  # plan within this share of the budget: allocator slack and what grows after the plan
# allocated memory grows by about this much past the estimate in a training's first steps, whatever the batch
# (oneDNN scratch space, autograd's buffers; see benchmarks/results for the measurement)
FIRST_STEPS_GROWTH = 160 * 2**20
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 1}


def default_budget() -> int:
    """A share of what the machine has available now (plus what this process already holds), at most 4 GiB."""
    available = available_bytes()
    if available is None:
        return DEFAULT_CAP
    return int(min(DEFAULT_CAP, allocated_bytes() + DEFAULT_SHARE * available))


@dataclass(frozen=True)
class MemoryEstimate:
    fixed: int  # parameters + gradients + optimizer state
    train_per_sample: int  # saved activations x BACKWARD_FACTOR
    eval_per_sample: int

    def training(self, batch: int) -> int:
        return self.fixed + self.train_per_sample * batch


@torch.no_grad()
def _eval_peak_per_sample(model: nn.Module, x: torch.Tensor) -> int:
    peak = 0

    def hook(module, inputs, output):
        nonlocal peak
        size = sum(t.nbytes for t in inputs if isinstance(t, torch.Tensor))
        size += output.nbytes if isinstance(output, torch.Tensor) else 0
        peak = max(peak, size)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return int(EVAL_FACTOR * peak / x.shape[0])


def _saved_per_sample(model: nn.Module, x: torch.Tensor) -> int:
    seen: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}  # saved too, but counted in `fixed`

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return int(sum(seen.values()) / x.shape[0])


def estimate(model: nn.Module, sample: torch.Tensor, optimizer: str) -> MemoryEstimate:
    """Measured on a copy (BatchNorm statistics of the real model stay untouched); `sample` is one input batch of
    at least 2 images in the layout training uses. A network that resizes its input to more than PROBE_SIDE px
    (a backbone at a large --input-size) is measured at PROBE_SIDE and scaled by the pixel count: activations grow
    with it, and measuring at 2,048 px would itself take gigabytes."""
    probe = copy.deepcopy(model)
    x = sample[:2].float()
    total = sum(p.numel() * p.element_size() for p in probe.parameters())
    # every parameter may become trainable later (fine-tuning's phase 2): charge gradients and state for them all
    fixed = total * (2 + OPTIMIZER_STATES.get(optimizer, 2))
    for p in probe.parameters():
        p.requires_grad_(True)
    scale = 1.0
    adapter = getattr(probe, "adapter", None)
    size = getattr(adapter, "input_size", None)
    if size is not None and size[0] * size[1] > PROBE_SIDE**2:
        scale = size[0] * size[1] / PROBE_SIDE**2
        adapter.input_size = (PROBE_SIDE, PROBE_SIDE)
    saved = _saved_per_sample(probe, x) * scale
    return MemoryEstimate(fixed=fixed, train_per_sample=int(BACKWARD_FACTOR * saved),
                          eval_per_sample=int(_eval_peak_per_sample(probe, x) * scale))


def with_shifted_views(est: MemoryEstimate, chans: int, size: tuple[int, int], shift: int) -> MemoryEstimate:
    """Test-time shifts (evaluate.inference.tta_views) hold a reflect-padded float copy of the batch and one shifted
    view beside the network's activations: charge both to each evaluated image."""
    if shift <= 0:
        return est
    h, w = size
    extra = 4 * chans * ((h + 2 * shift) * (w + 2 * shift) + h * w)
    return dataclasses.replace(est, eval_per_sample=est.eval_per_sample + extra)


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch: int  # what one forward/backward runs; the optimizer steps every ceil(batch / micro_batch) of them
    eval_batch: int
    budget: int
    estimate: int  # peak bytes of the process at the planned batches
    note: str | None  # what the plan changed, for the user


def plan(est: MemoryEstimate, batch: int, eval_batch: int, *, budget: int, held: int, what: str) -> MemoryPlan:
    """The largest micro-batch (up to `batch`) and evaluation batch whose peak keeps held + peak within budget.
    A budget that cannot hold one image is an error with the figures."""
    usable = int(HEADROOM * budget)
    base = held + FIRST_STEPS_GROWTH
    room = usable - base - est.fixed
    gb = lambda b: f"{b / GiB:.1f} GB"  # noqa: E731
    if room < est.train_per_sample:
        need = base + est.training(1)
        raise UserError(f"{what} does not fit in {gb(budget)} of memory: it needs about {gb(need)} at batch 1 "
                        f"({gb(held)} already held, {gb(FIRST_STEPS_GROWTH)} that the first steps add, "
                        f"{gb(est.fixed)} for parameters, gradients and optimizer state, "
                        f"{est.train_per_sample / 2**20:.0f} MB per image); raise --max-memory or pick a smaller "
                        "--input-size / model")
    micro = max(1, min(batch, room // max(1, est.train_per_sample)))
    evalb = max(1, min(eval_batch, (usable - base - est.fixed // 2) // max(1, est.eval_per_sample)))
    steps = math.ceil(batch / micro)
    if steps > 1:  # equal micro-batches: 64 in 3 would be 22+21+21, not 30+30+4
        micro = math.ceil(batch / steps)
    notes = []
    if micro < batch:
        notes.append(f"batch {batch} runs as {steps} micro-batches of up to {micro} (gradient accumulation)")
    if evalb < eval_batch:
        notes.append(f"evaluation batch {eval_batch} -> {evalb}")
    peak = base + max(est.training(micro), est.fixed // 2 + est.eval_per_sample * evalb)
    note = None
    if notes:
        note = (f"memory: {' and '.join(notes)} to stay within {gb(budget)} (estimated peak {gb(peak)}; "
                "--max-memory changes the budget)")
    return MemoryPlan(micro, evalb, budget, peak, note)
