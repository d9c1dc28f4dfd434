"""Where the review page runs: in the foreground until Ctrl-C (`cnnarena doctor --review`), or in a background thread
of this process (a notebook), so the cell returns at once and the page shows inline.

The background server is uvicorn's own Server on its own event loop in a daemon thread: the doctor's decoded images
stay in this process's memory, nothing is decoded twice, and `stop()` (or leaving a `with` block) ends it. uvicorn
installs no signal handlers outside the main thread, so the caller's Ctrl-C and its event loop are left alone.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..data.dataset import ImageSet
from .launch import free_port
from .review import CURATION, create_review_app

STARTUP_SECONDS = 20.0


class ReviewPage:
    """The review page served in the background: `.url`, `.curation` (where Save writes), `.stop()`. A notebook
    cell that returns it shows the page inline."""

    def __init__(self, app: Any, port: int, curation: Path) -> None:
        import uvicorn

        self.port, self.curation = port, curation
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="cnnarena-review", daemon=True)

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
        """End the server and wait for its thread (open connections are closed)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)

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


def serve_review(report: dict[str, Any], images: ImageSet, out: Path, *, port: int = 0,
                 wait: bool = True) -> ReviewPage | None:
    """Serve the review page of `report` (decisions saved to out/curation.yaml) on 127.0.0.1: until Ctrl-C when
    `wait`, else in a background thread, returning the running ReviewPage."""
    port = port or free_port()
    app = create_review_app(report, images, out)
    if not wait:
        return ReviewPage(app, port, Path(out) / CURATION).start()
    import uvicorn

    print(f"review the findings at http://127.0.0.1:{port}/ (Ctrl+C stops); decisions are saved to "
          f"{Path(out) / CURATION}", file=sys.stderr, flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    return None
