"""A private PostgreSQL server for a test: initdb and pg_ctl under a temporary directory, on loopback only."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


def pg_bin() -> Path | None:
    """Debian's server programs (package postgresql), newest version first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(found[0]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as the `postgres` user Debian's package creates."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def postgres_server():
    """Yields a SQLAlchemy URL of a fresh server (trust authentication, user postgres, database postgres). Its
    files live in a directory of their own under the system's temp dir: pytest's are closed to other users."""
    binaries = pg_bin()
    assert binaries is not None, "PostgreSQL is not installed (make test installs Debian's postgresql)"
    root = Path(tempfile.mkdtemp(prefix="cnnarena-pg-"))
    data, sockets = root / "pgdata", root / "pgsock"
    sockets.mkdir()
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    subprocess.run(_as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                    "--no-sync"]), check=True, capture_output=True, text=True)
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off"
    subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l",
                                    str(root / "server.log"), "start"]), check=True, capture_output=True, text=True)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def kill_after_epochs(process, history: Path, epochs: int = 2, timeout: float = 180) -> int:
    """SIGKILL a worker started in a session of its own once its run's history holds `epochs` epochs, as a lost
    machine; the epochs it had finished."""
    import signal
    import time

    deadline = time.time() + timeout
    while (not history.exists() or len(history.read_text().splitlines()) < epochs) and time.time() < deadline:
        time.sleep(0.1)
    assert history.exists(), process.communicate(timeout=5)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    return len(history.read_text().splitlines())
