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


def parse_origins(text: str | None) -> list[str]:
    """--cors's comma-separated origins (scheme://host[:port], as a browser sends them in Origin), or * for any."""
    if not text:
        return []
    from urllib.parse import urlsplit

    origins = [o.strip() for o in text.split(",") if o.strip()]
    for origin in origins:
        if origin == "*":
            continue
        try:
            parts = urlsplit(origin)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
                or parts.path.strip("/") or parts.query or parts.fragment:
            raise UserError(f"--cors: {origin[:80]!r} is not an origin: give scheme://host[:port], e.g. "
                            f"https://app.example.com or http://localhost:3000 (comma-separated), or *")
    return [o if o == "*" else o.rstrip("/") for o in origins]


def check_tls(cert, key) -> bool:
    """Whether to serve HTTPS: both files given and loadable as a certificate chain and its key (UserError else)."""
    if cert is None and key is None:
        return False
    if cert is None or key is None:
        raise UserError("HTTPS needs both --tls-cert and --tls-key (PEM files)")
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except FileNotFoundError as e:
        raise UserError(f"cannot read {e.filename}: no such file") from None
    except (ssl.SSLError, OSError, ValueError) as e:
        raise UserError(f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its private key "
                        f"({getattr(e, 'reason', None) or e})") from None
    return True
