"""Where the review page runs: in the foreground until Ctrl-C (`cnnarena doctor --review`), or in a background thread
of this process (a notebook), so the cell returns at once and the page shows inline.

The background server is uvicorn's own Server on its own event loop in a daemon thread: the doctor's decoded images
stay in this process's memory, nothing is decoded twice, and `stop()` (or leaving a `with` block) ends it. uvicorn
installs no signal handlers outside the main thread, so the caller's Ctrl-C and its event loop are left alone.
"""

from __future__ import annotations

import html
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..data.dataset import ImageSet
from ..errors import UserError
from .review import CURATION, create_review_app

STARTUP_SECONDS = 20.0
GRACE_SECONDS = 2  # for a request still open when the page is stopped


class ReviewPage:
    """The review page served in the background: `.url`, `.curation` (where Save writes), `.stop()`. A notebook
    cell that returns it shows the page inline."""

    def __init__(self, app: Any, sock: socket.socket, curation: Path) -> None:
        self._socket, self.port, self.curation = sock, sock.getsockname()[1], curation
        self._server = _server(app)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="cnnarena-review", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started

    def start(self) -> ReviewPage:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the review page did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """End the server and wait for its thread: a request still open is given GRACE_SECONDS, then cut."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=GRACE_SECONDS + 5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> ReviewPage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"ReviewPage({self.url!r}, {state}; Save writes {str(self.curation)!r})"

    def _repr_html_(self) -> str:
        url, target = html.escape(self.url), html.escape(str(self.curation))
        if not self.running:
            return f"<p>The review page at {url} is stopped.</p>"
        return (f'<p>Review the findings at <a href="{url}" target="_blank">{url}</a>; Save writes '
                f"<code>{target}</code>. <code>.stop()</code> ends the page.</p>"
                f'<iframe src="{url}" width="100%" height="640" style="border:1px solid #ccc"></iframe>')


def _server(app: Any):
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=GRACE_SECONDS)
    return uvicorn.Server(config)


def _listening_socket(port: int) -> socket.socket:
    """A socket bound to 127.0.0.1:port (0: a free one), held from here on: no other process can take the port
    between choosing it and serving on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot serve the review page on 127.0.0.1:{port}: {e.strerror or e}") from None
    return sock


def serve_review(report: dict[str, Any], images: ImageSet, out: Path, *, port: int = 0,
                 wait: bool = True) -> ReviewPage | None:
    """Serve the review page of `report` (decisions saved to out/curation.yaml) on 127.0.0.1: until Ctrl-C when
    `wait`, else in a background thread, returning the running ReviewPage."""
    app = create_review_app(report, images, out)
    sock = _listening_socket(port)
    if not wait:
        return ReviewPage(app, sock, Path(out) / CURATION).start()
    print(f"review the findings at http://127.0.0.1:{sock.getsockname()[1]}/ (Ctrl+C stops); decisions are saved "
          f"to {Path(out) / CURATION}", file=sys.stderr, flush=True)
    with sock:
        _server(app).run(sockets=[sock])
    return None
