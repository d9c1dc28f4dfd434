"""The peers' own venvs under benchmarks/: created once, each with the packages its users would install.

No peer is ever a cnnarena dependency. Each venv is made with `python -m venv` and filled by pip; a stamp file
records what was installed, so a second run reuses it. torch comes from the same release cnnarena runs on, so
the race compares the tools, not two builds of PyTorch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TORCH = ("torch==2.14.1", "torchvision==0.29.1")
PACKAGES: dict[str, tuple[str, ...]] = {
    "fastai": (*TORCH, "fastai==2.8.12"),
    "ultralytics": (*TORCH, "ultralytics==8.4.190"),
}
STAMP = ".cnnarena-bench-installed"


class PeerUnavailable(Exception):
    """A peer cannot be set up or run; the message is the reason printed in the table."""


def last_line(text: str) -> str:
    """The last non-empty line of a tool's output, for a one-line reason."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def venv_path(name: str) -> Path:
    return HERE / f".venv-{name}"


def ensure_env(name: str, packages: tuple[str, ...] | None = None, *, log=lambda m: None) -> Path:
    """The python of peer `name`'s venv, creating it and installing its packages first when needed."""
    venv = venv_path(name)
    packages = packages or PACKAGES[name]
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    wanted = " ".join(packages)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    log(f"setting up the {name} peer in {venv} (pip install {wanted}); once, a few minutes")
    venv.mkdir(parents=True, exist_ok=True)
    pip_log = venv / "setup.log"

    def step(cmd: list[str], what: str) -> None:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PeerUnavailable(f"{what} failed: {e}") from None
        with open(pip_log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{done.stdout}\n{done.stderr}\n")
        if done.returncode != 0:
            raise PeerUnavailable(f"{what} failed: {last_line(done.stderr or done.stdout)} (log: {pip_log})")

    if not python.exists():
        step([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    step([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], "pip upgrade")
    step([str(python), "-m", "pip", "install", "-q", *packages], f"pip install {wanted}")
    stamp.write_text(wanted + "\n")
    return python


if __name__ == "__main__":
    for peer in sys.argv[1:] or PACKAGES:
        print(peer, ensure_env(peer, log=print), flush=True)
