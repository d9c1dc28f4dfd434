"""What this machine has: memory available now, and what this process holds (Linux /proc; None/0 elsewhere)."""

from __future__ import annotations


def resident_bytes() -> int:
    """This process's resident memory now (0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except (OSError, IndexError, ValueError):
        return 0


def allocated_bytes() -> int:
    """This process's anonymous resident memory (RssAnon): what it allocated and holds. Pages of shared libraries
    (torch maps 0.3-0.4 GB of them, more on some CPUs) are left out: the kernel shares them and can drop them, and
    how many are resident varies between machines. resident_bytes() where /proc/self/status has no RssAnon."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return resident_bytes()


def available_bytes() -> int | None:
    """The kernel's MemAvailable: what can be allocated without swapping (None where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration, ValueError):
        return None


def describe(device: str) -> str:
    """The machine a study ran on, as its report names it: 'cpu (AMD EPYC 7B13, 2 cores)', 'cuda (NVIDIA H100)'."""
    import os

    if str(device).startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{device} ({cpu_name()}, {cores} cores)"


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo; platform's answer elsewhere)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"
