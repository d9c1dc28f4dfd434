"""Fixtures shared by several test modules."""

import os
import tempfile
from pathlib import Path

# hypothesis keeps its caches in ./.hypothesis unless told: never the working tree
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "cnnarena-hypothesis"))

import pytest
import torch

from cnnarena.config import build_config
from cnnarena.run import train_run


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        # a pytest-xdist worker (make test runs two): the cores are shared with the other worker, so each trains on
        # one thread, and so do the processes its tests start (two threads per worker on two cores waited at every
        # op's barrier for a thread the other worker held)
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """One trained digits run per test session, shared by the predict, export, serve and web-page tests."""
    run = tmp_path_factory.getbasetemp() / "shared-digits-run"
    train_run(build_config(None, {"data": "digits", "epochs": 3, "lr": 5e-3}), run)
    return run


@pytest.fixture(scope="module")
def offline_one_thread(tmp_path_factory):
    """No network, empty weight caches (Lite0's weights come from the installed package), one thread (the cores
    are shared: several threads made the Lite0 runs up to 7x slower). Yields the environment it set."""
    tmp = tmp_path_factory.mktemp("caches")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hf"), "TORCH_HOME": str(tmp / "torch")}
    with pytest.MonkeyPatch.context() as mp:
        import huggingface_hub.constants

        for key, value in env.items():
            mp.setenv(key, value)
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        yield env
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """Where tests save what a person may want to look at (screenshots): pytest's temporary directory, which keeps
    the last three sessions' files, never the working tree."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(autouse=True)
def _in_an_empty_tmp_dir(tmp_path_factory, monkeypatch) -> None:
    """Each test runs in an empty temporary directory of its own: whatever cnnarena writes by default relative to
    the current directory (runs/DATA-MODEL-TIME, studies/default, inspect/, lr_find.png) lands there, not in the
    working tree. A safety net: tests pass their outputs explicit tmp paths."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


# --- the suite writes nothing into the working tree ---------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
# cnnarena's default outputs, relative to the current directory, and the test screenshots' old place: gitignored,
# so git status shows the folder once, not the new files in a folder that was there before; listed file by file
DEFAULT_OUTPUTS = ("runs", "studies", "artifacts", "inspect", "mlruns", "lr_find.png")
# written by Python, pytest and ruff whoever runs them; new .py files under src/ and tests/ are the edits of people
# working while the suite runs, never a test's output
TOOL_CACHES = ("__pycache__", ".pytest_cache", ".ruff_cache", ".egg-info")
WORKTREE_BEFORE = pytest.StashKey[set]()


def _worktree_listing() -> set[str] | None:
    """The repository's untracked and ignored paths (git status, tool caches left out) plus every file under the
    default output folders; None where git cannot tell (no git, not a checkout)."""
    import subprocess

    try:
        done = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "-z", "--ignored=matching",
                               "--untracked-files=all"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    listing = set()
    for entry in done.stdout.split("\0"):
        status, path = entry[:2], entry[3:]
        if status not in ("??", "!!") or any(part in path for part in TOOL_CACHES):
            continue  # tracked files edited (by people, while the suite runs) are not something that appeared
        if status == "??" and path.endswith(".py") and path.startswith(("src/", "tests/")):
            continue
        listing.add(path)
    for name in DEFAULT_OUTPUTS:
        path = REPO / name
        if path.is_dir():
            listing |= {f"{p.relative_to(REPO)}{'/' if p.is_dir() else ''}" for p in path.rglob("*")}
        elif path.exists():
            listing.add(name)
    return listing


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # once, in the process that reports (pytest-xdist)
        listing = _worktree_listing()
        if listing is not None:
            session.config.stash[WORKTREE_BEFORE] = listing


def pytest_sessionfinish(session, exitstatus):
    before = session.config.stash.get(WORKTREE_BEFORE, None)
    after = _worktree_listing() if before is not None else None
    appeared = sorted(after - before) if after is not None else []
    if not appeared:
        return
    lines = [f"the test session wrote into the working tree {REPO} (tests must write under tmp_path):",
             *(f"  {path}" for path in appeared[:50])]
    if len(appeared) > 50:
        lines.append(f"  ... and {len(appeared) - 50} more")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line, red=True, bold=line == lines[0])
    else:
        import sys

        print("\n".join(lines), file=sys.stderr)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
