"""Tracking and storage URLs a user gives (issue 33, groups 4, 7 and 8): a server that accepts and never answers is
one line within seconds, no password is ever printed, and postgresql:// works with the installed driver."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from postgres import pg_bin, postgres_server

from cnnarena.errors import UserError
from cnnarena.tracking.checked_uri import checked_uri, mask_secrets


def test_secrets_are_masked_in_any_text():
    assert mask_secrets("at http://ann:s3cret@host:5000/x: refused") == "at http://ann:***@host:5000/x: refused"
    shown = mask_secrets("--storage postgresql://u@db/optuna?password=s3cret&sslmode=require&api_key=abc")
    assert "s3cret" not in shown and "abc" not in shown and "sslmode=require" in shown


@pytest.mark.slow  # waits out the 5 s answer timeout
def test_a_tracking_server_that_never_answers_is_one_line_within_seconds():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    stop = threading.Event()

    def accept_and_say_nothing():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    port = server.getsockname()[1]
    t0 = time.perf_counter()
    try:
        with pytest.raises(UserError) as refused:
            checked_uri(f"http://ann:s3cret@127.0.0.1:{port}")
    finally:
        stop.set()
        server.close()
    message = str(refused.value)
    assert time.perf_counter() - t0 < 15 and "accepted the connection but sent nothing" in message
    assert "s3cret" not in message and "\n" not in message


def test_a_refused_tracking_server_does_not_print_the_password():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(UserError) as refused:
        checked_uri(f"http://ann:s3cret@127.0.0.1:{port}")
    assert "no tracking server answers" in str(refused.value) and "s3cret" not in str(refused.value)


@pytest.mark.slow  # a PostgreSQL cluster
@pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (make test installs Debian's postgresql)")
def test_postgresql_urls_as_tune_help_shows_them_work_with_psycopg2():
    from cnnarena.study.tune import _storage

    with postgres_server() as url:
        plain = url.replace("postgresql+psycopg2://", "postgresql://")
        storage = _storage(plain, heartbeat=10)
        assert storage.get_all_studies() == []
        with pytest.raises(UserError) as refused:
            _storage(plain.replace("postgres@", "postgres:s3cret@").replace("/postgres", "/nonexistent_db"), 10)
        assert "s3cret" not in str(refused.value)
