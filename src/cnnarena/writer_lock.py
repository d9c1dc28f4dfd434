"""One writer per run or study directory: an advisory lock (flock) on DIR/.lock, held while a process writes DIR.

The kernel drops the lock when its holder exits, however it exits (SIGKILL, a crash, a power cut of a network
mount aside), so a lock file left behind never blocks a rerun; a live holder is named in the second process's error.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; one writer is the user's to ensure
    fcntl = None


@contextmanager
def sole_writer(directory: Path, what: str = "run") -> Iterator[None]:
    directory = Path(directory)
    if fcntl is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise UserError(f"{directory} is being written by {holder}: one {what} has one writer; wait for it "
                            "to finish, or pass another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"cnnarena process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def taking_turns(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive flock on lock_file, waiting for it: for steps that every worker of a shared directory runs
    and that must not interleave (each worker logging the shared tune directory to MLflow)."""
    if fcntl is None:
        yield
        return
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
