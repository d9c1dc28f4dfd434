"""What an application needs of `cnnarena serve`, each against a real server on loopback: CORS for the origins it
names and no others, HTTPS, and images sent as a raw body or as base64 JSON with the same answers and limits as
multipart uploads."""

from __future__ import annotations

import base64
import io
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from cnnarena.serve.launch import ServerProcess

pytestmark = pytest.mark.slow  # server processes

APP = "http://localhost:3000"


@pytest.fixture(scope="module")
def png(digits_run) -> bytes:
    from sklearn.datasets import load_digits

    buffer = io.BytesIO()
    Image.fromarray((load_digits().images[3] * 255 / 16).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(digits_run):
    with ServerProcess(digits_run, "--log-level", "warning", "--cors", f"{APP},https://app.example.com",
                       "--max-body-mb", "0.05") as server:
        yield server


def _labels(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["label"] for r in response.json()["results"]]


def test_raw_and_base64_bodies_answer_as_multipart_does(server, png):
    multipart = _labels(httpx.post(server.url + "/v1/predict", files={"file": ("d.png", png, "image/png")}))
    raw = _labels(httpx.post(server.url + "/v1/predict", content=png, headers={"Content-Type": "image/png"}))
    text = base64.b64encode(png).decode()
    one = _labels(httpx.post(server.url + "/v1/predict", json={"image": text}))
    data_url = _labels(httpx.post(server.url + "/v1/predict", json={"images": [f"data:image/png;base64,{text}"] * 3}))
    assert raw == one == multipart and data_url == multipart * 3


@pytest.mark.parametrize(("body", "headers", "status", "says"), [
    (b"", {"Content-Type": "image/jpeg"}, 422, "body is empty"),
    (b"not an image", {"Content-Type": "image/png"}, 415, "not an image"),
    (b"{", {"Content-Type": "application/json"}, 400, "bad JSON"),
    (b'{"image": "***"}', {"Content-Type": "application/json"}, 422, "not valid base64"),
    (b'{"image": 3}', {"Content-Type": "application/json"}, 422, "base64 text"),
    (b'{"pictures": []}', {"Content-Type": "application/json"}, 422, "exactly one key"),
    (b'{"images": ["aGk="]}', {"Content-Type": "application/json; charset=utf-8"}, 415, "image 1: not an image"),
    (b'[' * 100_000, {"Content-Type": "application/json"}, 413, "too large"),
    (b"x", {"Content-Type": "text/plain"}, 415, "raw body"),
])
def test_bad_bodies_get_one_clear_line(server, body, headers, status, says):
    response = httpx.post(server.url + "/v1/predict", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert says.lower() in response.json()["error"].lower()
    assert httpx.get(server.url + "/v1/health").status_code == 200


def test_base64_images_count_against_max_files(server):
    tiny = base64.b64encode(b"x").decode()
    response = httpx.post(server.url + "/v1/predict", json={"images": [tiny] * 17})
    assert response.status_code == 413 and "at most 16" in response.json()["error"]


def test_cors_answers_the_named_origins_only(server, png):
    preflight = {"Origin": APP, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    ok = httpx.options(server.url + "/v1/predict", headers=preflight)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == APP
    assert "POST" in ok.headers["access-control-allow-methods"]
    other = httpx.options(server.url + "/v1/predict", headers={**preflight, "Origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    answer = httpx.post(server.url + "/v1/predict", content=png, headers={"Content-Type": "image/png", "Origin": APP})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == APP
    stranger = httpx.post(server.url + "/v1/predict", content=png,
                          headers={"Content-Type": "image/png", "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers


def test_no_cors_headers_by_default(digits_run, png):
    with ServerProcess(digits_run, "--log-level", "warning") as plain:
        answer = httpx.post(plain.url + "/v1/predict", content=png, headers={"Content-Type": "image/png",
                                                                             "Origin": APP})
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_https_with_a_certificate(digits_run, certificate, png):
    cert, key = certificate
    with ServerProcess(digits_run, "--log-level", "warning", "--tls-cert", str(cert), "--tls-key", str(key)) as tls:
        assert tls.url.startswith("https://")
        labels = _labels(httpx.post(tls.url + "/v1/predict", content=png, headers={"Content-Type": "image/png"},
                                    verify=ssl.create_default_context(cafile=str(cert))))  # trusted, as on a phone
        assert labels
        with pytest.raises(httpx.TransportError):  # plain HTTP gets no answer from an HTTPS port
            httpx.get(tls.url.replace("https://", "http://") + "/v1/health", timeout=3)
        assert "https://" in tls.log()


@pytest.mark.parametrize(("args", "says"), [
    (["--tls-cert", "{cert}"], "both --tls-cert and --tls-key"),
    (["--tls-cert", "{key}", "--tls-key", "{key}"], "not a PEM certificate"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "{key}"], "cannot read"),
    (["--cors", "localhost:3000"], "is not an origin"),
    (["--cors", "https://app.example.com/path"], "is not an origin"),
])
def test_bad_serve_options_are_one_line(digits_run, certificate, args, says):
    cert, key = certificate
    argv = [a.format(cert=cert, key=key) for a in args]
    done = subprocess.run([sys.executable, "-m", "cnnarena.cli", "serve", str(digits_run), "--port", "0", *argv],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
