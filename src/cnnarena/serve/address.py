"""What `cnnarena serve` checks before it loads a model or starts uvicorn: the log level and the address.

uvicorn reports a bad --log-level with a KeyError, and an address it cannot bind with a few log lines and
exit code 3 after the application started; here both are one UserError instead.
"""

from __future__ import annotations

import errno
import socket

from ..errors import UserError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def check_log_level(level: str) -> str:
    if level.lower() not in LOG_LEVELS:
        raise UserError(f"unknown --log-level {level!r}: use {', '.join(LOG_LEVELS)}")
    return level.lower()


def check_listen(host: str, port: int) -> None:
    """UserError unless `host`:`port` can be bound now, tried the way asyncio's create_server (uvicorn) binds.

    Every address the host resolves to is tried (SO_REUSEADDR, IPv6 sockets v6-only); as in asyncio,
    an address family the machine has not enabled (EADDRNOTAVAIL) is skipped unless none is left.
    The sockets are closed again: uvicorn binds its own a moment later.
    """
    where = f"{host}:{port}"
    try:
        infos = set(socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) else str(e)
        raise UserError(f"cannot listen on {where}: {host!r} is not a valid address here ({reason}); "
                        f"use an address of this machine, e.g. 127.0.0.1 or 0.0.0.0") from None
    bound, unavailable = 0, None
    for family, kind, proto, _, address in sorted(infos, key=repr):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:  # a family this machine does not support, as asyncio assumes
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:
                    unavailable = e
                    continue
                raise UserError(f"cannot listen on {where}: {_reason(e, port)}") from None
            bound += 1
    if not bound:
        why = f"{host} is not an address of this machine" if unavailable else "no usable address"
        raise UserError(f"cannot listen on {where}: {why}; use e.g. 127.0.0.1, or 0.0.0.0 for every interface")


def _reason(e: OSError, port: int) -> str:
    if e.errno == errno.EADDRINUSE:
        return "address already in use (is another server running there?): choose another --port"
    if e.errno == errno.EACCES:
        return ("permission denied (ports below 1024 need privileges): choose a --port from 1024 up"
                if 0 < port < 1024 else "permission denied")
    return (e.strerror or str(e)).lower()
