"""The peers' own venvs under benchmarks/: created once, each with the packages its users would install.

No peer is ever a cnnarena dependency. Each venv is made with `python -m venv` and filled by pip; a stamp file
records what was installed, so a second run reuses it. torch comes from the same release cnnarena runs on, so
the race compares the tools, not two builds of PyTorch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.keras_peer import STAMP, PeerUnavailable, last_line  # one stamp, exception and reason for all peers

HERE = Path(__file__).resolve().parent
TORCH = ("torch==2.14.1", "torchvision==0.29.1")
PACKAGES: dict[str, tuple[str, ...]] = {
    "fastai": (*TORCH, "fastai==2.8.12"),
    "ultralytics": (*TORCH, "ultralytics==8.4.190"),
}


def venv_path(name: str) -> Path:
    return HERE / f".venv-{name}"


def ensure_env(name: str, packages: tuple[str, ...] | None = None, *, log=lambda m: None) -> Path:
    """The python of peer `name`'s venv, creating it and installing its packages first when needed."""
    return install(venv_path(name), packages or PACKAGES[name], what=name, log=log)


def install(venv: Path, packages: tuple[str, ...], *, what: str, log=lambda m: None) -> Path:
    """The python of `venv`, created and given `packages` unless its stamp says they are installed already."""
    venv = Path(venv)
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    wanted = " ".join(packages)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    log(f"setting up the {what} peer in {venv} (pip install {wanted}); once, a few minutes")
    venv.mkdir(parents=True, exist_ok=True)
    pip_log = venv / "setup.log"

    def step(cmd: list[str], action: str) -> None:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PeerUnavailable(f"{action} failed: {e}") from None
        with open(pip_log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{done.stdout}\n{done.stderr}\n")
        if done.returncode != 0:
            raise PeerUnavailable(f"{action} failed: {last_line(done.stderr or done.stdout)} (log: {pip_log})")

    if not python.exists():
        step([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    step([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], "pip upgrade")
    step([str(python), "-m", "pip", "install", "-q", *packages], f"pip install {wanted}")
    stamp.write_text(wanted + "\n")
    return python


if __name__ == "__main__":
    for peer in sys.argv[1:] or PACKAGES:
        print(peer, ensure_env(peer, log=print), flush=True)
