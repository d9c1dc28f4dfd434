"""Converters that talk: litert-torch prints its progress, coremltools draws progress bars and warns about
versions it has not tested. An export's own lines say what matters, so theirs are held back while they run and
shown only when the conversion fails (the last lines, in the error)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

TAIL_LINES = 5


@contextlib.contextmanager
def quietly() -> Iterator[io.StringIO]:
    """Python-level output and warnings of the block captured (restored after it, whatever happens)."""
    captured = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def native_stderr_held() -> Iterator[None]:
    """What native code writes to file descriptor 2 during the block (C++ libraries' logs, which Python's
    redirection does not see) held in a temporary file; written out after the block only if it raised."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                with open(2, "wb", closefd=False) as stderr:  # writes all of it (os.write may stop short)
                    stderr.write(held.read())


def first_line(error: BaseException) -> str:
    """An exception's message's first line ("" for one without a message)."""
    return (str(error).splitlines() or [""])[0]


def tail(captured: io.StringIO) -> str:
    lines = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
    return " | ".join(lines[-TAIL_LINES:])
