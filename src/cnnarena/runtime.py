"""Process-wide settings: the library never changes the process on its own; the CLI (or a caller) opts in.

What lives here is what affects more than the call that asked for it:
- `tune_malloc`: glibc's malloc keeps freed memory in the process (see memory.py); it stays on once applied.
- `tune_threads`: CPU training picks its thread count by measurement (see train/threads.py), which sets torch's
  global thread count while an epoch trains and restores it afterwards.
- `live_progress`: training redraws one live progress line on a terminal (otherwise one log line per epoch).
- `notebook_progress`: a tqdm.auto progress bar per epoch instead (the API sets it for a call in a notebook).
- `cache_dir()`: the one cache root, $CNNARENA_CACHE or ~/.cache/cnnarena (images/, kernels/, datasets below).

Messages go through `logging` under the "cnnarena" logger; `configure(console=True)` shows them on stderr
with rich's handler. A library user who configures nothing sees warnings only (Python's last-resort handler).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOGGER = "cnnarena"


@dataclass(frozen=True)
class RuntimeSettings:
    tune_malloc: bool = False
    tune_threads: bool = False
    live_progress: bool = False
    notebook_progress: bool = False  # a tqdm.auto bar per epoch (a widget in Jupyter), set by the API in notebooks


_settings = RuntimeSettings()
_console_handler: logging.Handler | None = None


def settings() -> RuntimeSettings:
    return _settings


def configure(*, console: bool = False, **changes: bool) -> RuntimeSettings:
    """Opt into process-wide behaviour (the CLI calls this once at start-up); returns the new settings.

    console: log cnnarena's INFO messages to stderr (rich's handler on a terminal, plain lines otherwise).
    """
    global _settings
    _settings = dataclasses.replace(_settings, **changes)
    if _settings.tune_malloc:
        from .memory import keep_freed_memory

        keep_freed_memory()
    if console:
        _log_to_console()
    return _settings


@contextmanager
def using(*, console: bool = False, **changes: bool) -> Iterator[RuntimeSettings]:
    """These settings for the duration of a block (tests, benchmarks), and whatever configure() does inside it,
    undone afterwards (except malloc tuning, which cannot be). console: cnnarena's log messages go to stderr (as it
    is at each message) inside the block."""
    global _settings, _console_handler
    before, before_console = _settings, _console_handler
    _settings = dataclasses.replace(_settings, **changes)
    logger = logging.getLogger(LOGGER)
    handler, level = None, logger.level
    if console:
        handler = _plain_handler()
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield _settings
    finally:
        _settings = before
        if _console_handler is not before_console:  # configure(console=True) ran inside: undo that too
            logger.removeHandler(_console_handler)
            if before_console is not None:
                logger.addHandler(before_console)
            _console_handler = before_console
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(level)


def console_configured() -> bool:
    """Whether configure(console=True) has run: cnnarena's messages already reach the user."""
    return _console_handler is not None


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (Jupyter, Colab, VS Code notebooks); read, never imported."""
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    ip = get() if get is not None else None
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


@contextmanager
def talking() -> Iterator[None]:
    """In a notebook, cnnarena's messages and a live progress bar show in the cell for the duration of a call (the
    API wraps each call in this), with no set-up call; elsewhere nothing changes unless the caller configured it."""
    if in_notebook() and not console_configured():
        with using(console=True, notebook_progress=True):
            yield
    else:
        yield


def cache_dir() -> Path:
    """The root of everything cnnarena caches: $CNNARENA_CACHE, else $XDG_CACHE_HOME/cnnarena, else
    ~/.cache/cnnarena."""
    env = os.environ.get("CNNARENA_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnarena"


def _log_to_console() -> None:
    global _console_handler
    logger = logging.getLogger(LOGGER)
    if _console_handler is not None:
        logger.removeHandler(_console_handler)
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False,
                                               show_level=False, markup=False)
    else:
        handler = _plain_handler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    _console_handler = handler


def _plain_handler() -> logging.Handler:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is at each message, not as it was at start-up (redirectable, capturable)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def exit_now(code: int) -> None:
    """End the command without tearing torch, SciPy and matplotlib down module by module, which took 1.5-2 s after
    every run had written and closed its files. atexit handlers (MLflow's, logging's) still run; while another
    non-daemon thread is alive, the ordinary exit waits for it."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)
