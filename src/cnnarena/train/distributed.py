"""Data-parallel training across processes started by torchrun (torch.distributed + DistributedDataParallel).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous; `start()` joins the process group (gloo on the
CPU, NCCL on CUDA) and is called only by the CLI: the library never starts one by itself. Every rank computes the
same epoch order from the same seed and takes its slice of each global batch (data.loader.BatchLoader's shard), so
an epoch sees every sample once. Rank 0 alone writes the run directory; decisions taken from clocks (--budget,
--max-minutes) are rank 0's, broadcast, so every rank stops at the same step.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def start(device_name: str = "auto") -> World | None:
    """Join torchrun's process group (once); None when this process is not one of several."""
    if not launched_by_torchrun():
        return None
    if not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device_name != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return world()


_alone = False


@contextmanager
def alone():
    """Work of this rank only (rank 0's test evaluation): world() says None inside, so no collective is entered."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def world() -> World | None:
    """This process's place among the ranks, when a process group is running (None otherwise)."""
    if _alone or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def is_main() -> bool:
    w = world()
    return w is None or w.is_main


def device_for(name: str, w: World | None) -> str:
    """Each rank on its own GPU (LOCAL_RANK); the CPU stays the CPU."""
    if w is not None and torch.cuda.is_available() and name in ("auto", "cuda"):
        return f"cuda:{w.local_rank % torch.cuda.device_count()}"
    return name


def barrier() -> None:
    if world() is not None:
        dist.barrier()


def sum_all(*values: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor summed over the ranks (in one collective); unchanged in a single process."""
    if world() is None:
        return list(values)
    flat = torch.stack([v.detach().double().reshape(()) for v in values])
    dist.all_reduce(flat)
    return [flat[i].to(v.dtype) for i, v in enumerate(values)]


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any (a stop that one rank's clock called)."""
    if world() is None:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(value):
    """Rank 0's value on every rank (any picklable object)."""
    if world() is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(net: torch.nn.Module, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """The module a training step runs: DDP over `net` (sharing its parameters) when there are several ranks."""
    if world() is None:
        return net
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        if device.type != "cuda":
            raise UserError("--sync-bn needs GPUs: PyTorch's SyncBatchNorm does not run on the CPU")
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if not any(p.requires_grad for p in net.parameters()):
        return net
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
