"""Start `cnnarena serve` in a child process on a free loopback port and wait until it answers.

For tests and benchmarks, which need a real server over real sockets, started and stopped by them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx


class _PortTaken(Exception):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """`with ServerProcess(run_dir, "--max-batch", "16") as server: httpx.get(server.url + "/v1/health")`."""

    def __init__(self, run_dir: Path, *args: str, host: str = "127.0.0.1", startup_s: float = 120.0) -> None:
        self.run_dir, self.args, self.host, self.startup_s = Path(run_dir), list(args), host, startup_s
        self.port = 0
        self.scheme = "https" if "--tls-cert" in self.args else "http"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty server never blocks on it
        self._final_log = ""

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, attempts: int = 3) -> ServerProcess:
        for attempt in range(attempts):
            try:
                return self._start_once()
            except _PortTaken:  # another process took the free port between our check and the bind
                if attempt == attempts - 1:
                    raise RuntimeError(f"no free port after {attempts} tries:\n{self.log()}") from None
        raise AssertionError("unreachable")

    def _start_once(self) -> ServerProcess:
        self.port = free_port(self.host)
        cmd = [sys.executable, "-m", "cnnarena.cli", "serve", str(self.run_dir), "--host", self.host,
               "--port", str(self.port), *self.args]
        self._log.seek(0)
        self._log.truncate()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.log().lower():
                    raise _PortTaken
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                # a test's self-signed certificate: this only asks whether the server answers yet
                if httpx.get(self.url + "/v1/health", timeout=1.0, verify=False).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer within {self.startup_s:.0f}s:\n{self.log()}")

    def log(self) -> str:
        """Everything the server printed so far (kept after the server stopped)."""
        if self._log.closed:
            return self._final_log
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._final_log = self.log()
        self._log.close()
