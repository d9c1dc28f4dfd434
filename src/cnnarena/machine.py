"""What this machine has: memory available now, and what this process holds (Linux /proc; None/0 elsewhere)."""

from __future__ import annotations


def resident_bytes() -> int:
    """This process's resident memory now (0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except (OSError, IndexError, ValueError):
        return 0


def available_bytes() -> int | None:
    """The kernel's MemAvailable: what can be allocated without swapping (None where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration, ValueError):
        return None
