"""A real `cnnarena serve` on loopback against clients that misbehave, with raw sockets (issue 33, group 2):
connections that send nothing or never finish their headers are closed after --head-timeout and never starve
other clients; headers over 16 KiB are refused with the HTTP parser actually in use; a request beyond
--max-connections in flight gets 503 at once."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from cnnarena.serve.launch import ServerProcess

HEAD_TIMEOUT = 2.0


pytestmark = pytest.mark.slow  # a server process and 200 sockets


@pytest.fixture(scope="module")
def server(digits_run):
    with ServerProcess(digits_run, "--head-timeout", str(HEAD_TIMEOUT), "--max-connections", "8") as running:
        yield running


def _connect(server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_idle_and_half_finished_connections_do_not_starve_others_and_are_closed(server):
    idle = [_connect(server) for _ in range(100)]  # more than --max-connections, sending nothing
    slow = [_connect(server) for _ in range(100)]
    for sock in slow:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers never finished
    for _ in range(3):
        assert httpx.get(server.url + "/v1/health", timeout=5).status_code == 200
    t0 = time.monotonic()
    assert all(_closed_by_server(s, HEAD_TIMEOUT + 5) for s in idle + slow)
    assert time.monotonic() - t0 < 2 * HEAD_TIMEOUT + 10
    for sock in idle + slow:
        sock.close()


def test_a_kept_alive_connection_that_starts_a_second_request_and_stops_is_closed(server):
    sock = _connect(server)
    sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(5)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /v1/health HTTP/1.1\r\nHo")  # uvicorn's keep-alive timer stops at the first byte
    assert _closed_by_server(sock, HEAD_TIMEOUT + 5)
    sock.close()


@pytest.mark.parametrize("size", [17 * 1024, 1 << 20, 64 << 20])
def test_headers_over_16_kib_are_refused(server, size):
    sock = _connect(server)
    try:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        return  # refused before the whole header was read: also not a 200
    sock.settimeout(10)
    try:
        answer = sock.recv(65536)
    except ConnectionResetError:
        answer = b""
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:100]
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100]
    sock.close()


def _answer(server, request: bytes) -> bytes:
    sock = _connect(server)
    try:
        sock.sendall(request)
        sock.settimeout(10)
        return sock.recv(65536)
    except (BrokenPipeError, ConnectionResetError):
        return b""  # refused before the whole request was read
    finally:
        sock.close()


def test_any_mix_of_header_sizes_and_counts_is_served_or_refused_and_the_server_keeps_serving(server):
    """Hypothesis: up to 300 headers of up to 20 KiB each. Under 16 KiB in all, a 200; over, never a 200."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(st.tuples(st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=40),
                              st.integers(0, 20_000)), max_size=300))
    def check(headers):
        lines = b"".join(f"X-{name}: ".encode() + b"v" * size + b"\r\n" for name, size in headers)
        answer = _answer(server, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        if len(lines) < 15 * 1024:
            assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        elif len(lines) > 17 * 1024:
            assert not answer.startswith(b"HTTP/1.1 200"), answer[:80]
        assert httpx.get(server.url + "/v1/health", timeout=5).status_code == 200

    check()
