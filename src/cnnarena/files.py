"""Files written whole or not at all: a temporary name in the same directory, then a rename.

Every room that writes results (runs, studies, exports, caches) uses these, so a killed process never leaves a
half-written file behind: the previous version stays valid until the new one is complete.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """`write(tmp_name)` fills a temporary file beside `path`, which then replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        as_umask_allows(tmp)
        os.replace(tmp, path)
    except OSError:
        raise
    except Exception as e:  # torch.save's C++ writer reports a full disk as an iostream RuntimeError
        if _nearly_full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def as_umask_allows(path: str | Path) -> None:
    """The mode a plain open() would have given the file (mkstemp makes it private: a shared study's report and
    models were unreadable to the rest of the group)."""
    os.chmod(path, 0o666 & ~current_umask())


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it, which races with
    other threads); 0o022 where /proc does not say."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return 0o022


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _nearly_full(directory: Path, margin: int = 1 << 20) -> bool:
    try:
        stats = os.statvfs(directory)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False
    return stats.f_bavail * stats.f_frsize < margin
