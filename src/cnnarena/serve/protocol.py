"""The HTTP protocol `cnnarena serve` runs: uvicorn's h11 one, with the limits a public server needs.

- h11, not httptools: uvicorn applies its header-size limit (h11_max_incomplete_event_size) only with h11; with
  httptools installed, 1 MiB and 64 MiB headers were accepted.
- A connection must send a complete request head within `head_timeout` seconds of opening, and of finishing its
  previous request: connections that send nothing, or never finish their headers, are closed (64 of them took the
  server down while they stayed open). uvicorn's keep-alive timer alone is cancelled by the first byte.
"""

from __future__ import annotations

import asyncio
import functools

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT = 10.0
HEADER_BYTES = 16 * 1024


class GuardedH11Protocol(H11Protocol):
    head_timeout = HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._await_head()

    def on_response_complete(self) -> None:
        finished = self.cycle
        super().on_response_complete()  # may already start a pipelined request: its own cycle, not waited on
        if self.cycle is finished:
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        """Close the connection unless a new request head arrives in time (a new cycle starts with it)."""
        if self._head_timer is not None:
            self._head_timer.cancel()
        waiting_after = self.cycle
        self._head_timer = self.loop.call_later(self.head_timeout, self._close_if_no_head, waiting_after)

    def _close_if_no_head(self, waiting_after) -> None:
        if self.cycle is waiting_after and not self.transport.is_closing():
            self.transport.close()


def protocol_with(head_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class with this timeout (uvicorn builds one protocol object per connection from the class)."""
    return functools.wraps(GuardedH11Protocol, updated=())(
        type("GuardedH11Protocol", (GuardedH11Protocol,), {"head_timeout": float(head_timeout)}))
