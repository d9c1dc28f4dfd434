"""The HTTP server: every endpoint and every bad input through the real app, then a real uvicorn under load."""

from __future__ import annotations

import io
import json
import math
import socket
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from cnnarena.evaluate.predict import decode_for, load_run_model
from cnnarena.serve.app import INLINE_DECODE_PIXELS, create_app
from cnnarena.serve.launch import ServerProcess


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_bomb(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG header claiming side×side pixels: tiny on the wire, huge when decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\0" * (1 + side // 8) * 64)  # a few rows: the header is what matters
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def run(digits_run) -> Path:
    return digits_run


@pytest.fixture(scope="module")
def samples(run) -> list[tuple[str, bytes, np.ndarray]]:
    """(filename, file bytes, expected probabilities from the PyTorch model in-process) in assorted formats."""
    from sklearn.datasets import load_digits

    images = (load_digits().images[:24] * (255 / 16)).round().astype(np.uint8)
    model = load_run_model(run)
    out = []
    for i, pixels in enumerate(images):
        img = Image.fromarray(pixels)
        if i % 4 == 1:
            name, data = f"d{i}.jpg", encode(img.resize((64, 48)).convert("RGB"), "JPEG", quality=90)
        elif i % 4 == 2:
            name, data = f"d{i}.webp", encode(img.resize((30, 30)).convert("RGBA"), "WEBP", lossless=True)
        elif i % 4 == 3:  # over INLINE_DECODE_PIXELS: decoded in the server's decoder threads, not inline
            side = math.isqrt(INLINE_DECODE_PIXELS) + 8
            name, data = f"d{i}.png", encode(img.resize((side, side)))
        else:
            name, data = f"d{i}.png", encode(img)
        x = torch.from_numpy(decode_for(model.meta, io.BytesIO(data))[None]).float() / 255
        with torch.inference_mode():
            out.append((name, data, model(x).softmax(1)[0].numpy()))
    return out


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app(run, max_files=4)) as c:
        yield c


def assert_matches(result: dict, expected: np.ndarray, classes: list[str], k: int = 5) -> None:
    order = np.argsort(-expected)[:k]
    assert [p["label"] for p in result["predictions"]] == [classes[j] for j in order]
    assert [p["probability"] for p in result["predictions"]] == pytest.approx(expected[order].tolist(), abs=1e-4)
    assert result["label"] == classes[order[0]] and result["latency_ms"] > 0 and result["batch_size"] >= 1


CLASSES = [str(i) for i in range(10)]


def test_health_model_card_and_page(client):
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["backend"] == "onnx" and health["model"] == "simple-2conv"
    assert health["batching"]["max_batch"] == 32 and health["batching"]["max_wait_ms"] == 2.0
    card = client.get("/v1/model").json()
    assert card["classes"] == CLASSES and card["input"]["shape"] == ["batch", 1, 8, 8]
    assert card["normalisation"]["applied"] == "inside the model" and card["check"]["batch_axis"] == "batch"
    assert "test_accuracy" in card["metrics"]
    assert str(Path(card["source_run"]).parent) == "." and "/tmp" not in json.dumps(card)  # no server paths
    assert card["source_run"] == "shared-digits-run"  # its name, not where it lies on the server's disk
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text and 'type="file"' in page.text
    for path, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        response = client.get(path)
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert "http://" not in client.get("/static/app.js").text + page.text  # nothing fetched from elsewhere


def test_predict_one_and_many(client, samples):
    name, data, expected = samples[0]
    body = client.post("/v1/predict", files={"file": (name, data, "image/png")}).json()
    assert body["backend"] == "onnx" and len(body["results"]) == 1
    assert_matches(body["results"][0], expected, CLASSES)
    many = samples[1:5]
    response = client.post("/v1/predict?top_k=3", files=[("files", (n, d, "application/octet-stream"))
                                                        for n, d, _ in many])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [n for n, _, _ in many]
    for r, (_, _, expected) in zip(results, many, strict=True):
        assert_matches(r, expected, CLASSES, k=3)
    assert {r["batch_size"] for r in results} == {4}  # one request's images share one inference


def test_torch_backend_gives_the_same_answers(run, samples):
    with TestClient(create_app(run, backend="torch")) as c:
        assert c.get("/v1/model").json()["backend"] == "torch"
        for name, data, expected in samples[:4]:
            assert_matches(c.post("/v1/predict", files={"file": (name, data)}).json()["results"][0], expected, CLASSES)


def _multipart(boundary: str, *parts: bytes) -> bytes:
    return b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()


GOOD_PNG = encode(Image.new("L", (8, 8), 200))
# a streamed body with no Content-Length (a list: each request sends it anew)
CHUNKED_PARTS = [b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"] \
    + [b"\0" * (1 << 20)] * 12
BAD_CASES = {
    "no body": (dict(), 415, "multipart/form-data"),
    "json body": (dict(json={"file": "x"}), 422, "exactly one key, 'image'"),  # JSON is taken, with an image
    "empty file": (dict(files={"file": ("a.png", b"")}), 400, "a.png: empty file"),
    "zero parts": (dict(content=b"--zz--\r\n", headers={"content-type": "multipart/form-data; boundary=zz"}),
                   422, "no image"),
    "no boundary": (dict(content=b"abc", headers={"content-type": "multipart/form-data"}), 400, "boundary"),
    "not an image": (dict(files={"file": ("cat.png", b"GIF89a? no, just text")}), 415, "not an image"),
    "svg": (dict(files={"file": ("x.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>")}), 415, "not an image"),
    "truncated png": (dict(files={"file": ("t.png", encode(Image.effect_noise((64, 64), 40))[:300])}), 422,
                      "truncated"),
    "truncated jpeg": (dict(files={"file": ("t.jpg", encode(Image.effect_noise((64, 64), 40), "JPEG")[:400])}),
                       422, "truncated"),
    "over the pixel limit": (dict(files={"file": ("big.png", png_bomb(10_000))}), 413, "the limit is 40,000,000"),
    "decompression bomb": (dict(files={"file": ("bomb.png", png_bomb(40_000))}), 413, "pixels"),
    "body too large": (dict(files={"file": ("big.png", GOOD_PNG + b"\0" * (11 << 20))}), 413, "too large"),
    "chunked too large": (dict(content=CHUNKED_PARTS,
                               headers={"content-type": "multipart/form-data; boundary=zz"}), 413, "too large"),
    "wrong field": (dict(files={"image": ("a.png", GOOD_PNG)}), 422, "unexpected field 'image'"),
    "text instead of file": (dict(data={"file": "abc"}, files={"files": ("a.png", GOOD_PNG)}), 422,
                             "must be a file upload"),
    "too many files": (dict(files=[("files", (f"{i}.png", GOOD_PNG)) for i in range(5)]), 413, "too many files"),
    "top_k zero": (dict(params={"top_k": 0}, files={"file": ("a.png", GOOD_PNG)}), 422, "top_k"),
    "top_k text": (dict(params={"top_k": "all"}, files={"file": ("a.png", GOOD_PNG)}), 422, "top_k"),
}


def _fresh(kwargs: dict) -> dict:
    """The request's arguments, a streamed body as a new iterator (one is used up by the request that sends it)."""
    return {**kwargs, "content": iter(kwargs["content"])} if kwargs.get("content") is CHUNKED_PARTS else kwargs


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_request_is_a_clear_4xx_and_the_server_keeps_serving(client, case):
    kwargs, status, message = BAD_CASES[case]
    response = client.post("/v1/predict", **_fresh(kwargs))
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"] and message in response.json()["error"]
    good = client.post("/v1/predict", files={"file": ("ok.png", GOOD_PNG)})
    assert good.status_code == 200 and len(good.json()["results"][0]["predictions"]) == 5


def test_unknown_routes_and_methods_answer_json(client):
    assert client.get("/v2/nothing").json() == {"error": "Not Found"}
    response = client.get("/v1/predict")
    assert response.status_code == 405 and "error" in response.json()
    assert client.get("/v1/health").json()["rejected"] >= 1


def _raw_http(port: int, head: bytes, body: bytes = b"", read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        if not read:
            return b""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.slow  # a uvicorn server process
def test_a_stalled_upload_is_cut_off_and_the_server_keeps_serving(run, samples):
    with ServerProcess(run, "--body-timeout", "1", "--log-level", "warning") as server:
        t0 = time.perf_counter()
        reply = _raw_http(server.port, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                          b"boundary=zz\r\nContent-Length: 5000\r\n\r\n", b"--zz\r\n")  # then nothing
        assert reply.startswith(b"HTTP/1.1 408") and b"stalled" in reply, reply[:300]
        assert time.perf_counter() - t0 < 8
        name, data, expected = samples[0]
        after = httpx.post(server.url + "/v1/predict", files={"file": (name, data)}, timeout=30)
        assert after.status_code == 200
    assert "Traceback" not in server.log(), server.log()


def test_serve_help_documents_the_limits(monkeypatch, capsys):
    from cli_run import run_cli

    code, out, _ = run_cli(["serve", "--help"], monkeypatch, capsys)
    text = " ".join(out.split())
    assert code == 0
    for needle in ("--max-body-mb", "--max-files", "--max-pixels", "--body-timeout", "--max-connections", "16 KiB",
                   "(408)", "(503)"):
        assert needle in text, needle


@pytest.mark.slow  # a uvicorn server process
@pytest.mark.alone  # batches form only when the requests outrun the model
def test_real_server_under_concurrent_load_batches_requests(run, samples):
    with ServerProcess(run, "--max-wait-ms", "10", "--log-level", "warning") as server:
        with httpx.Client(base_url=server.url, timeout=60) as http:

            def one(i: int) -> tuple[int, dict]:
                name, data, _ = samples[i % len(samples)]
                response = http.post("/v1/predict", files={"file": (name, data)})
                return i, response.json() if response.status_code == 200 else {"status": response.status_code}

            with ThreadPoolExecutor(16) as pool:  # 64 requests, 16 in flight at a time
                answers = list(pool.map(one, range(64)))
            for i, body in answers:
                assert "results" in body, body
                assert_matches(body["results"][0], samples[i % len(samples)][2], CLASSES)
            health = http.get("/v1/health").json()
            assert health["images"] == 64 and health["batching"]["images"] == 64
            assert health["batching"]["max_batch_size_seen"] > 1, health  # requests really shared inferences
            assert health["batching"]["batches"] < 64

            # Over real sockets: a declared oversize body is refused before it is sent, and a client that
            # vanishes mid-upload costs nothing; the server answers the next request as usual.
            reply = _raw_http(server.port, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/"
                              b"form-data; boundary=zz\r\nContent-Length: 900000000\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 413") and b'"error"' in reply
            _raw_http(server.port, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                      b"boundary=zz\r\nContent-Length: 5000\r\n\r\n", b"--zz\r\n", read=False)
            big = http.post("/v1/predict", files={"file": ("big.png", GOOD_PNG + b"\0" * (11 << 20))})
            assert big.status_code == 413 and "too large" in big.json()["error"]
            name, data, expected = samples[3]
            after = http.post("/v1/predict", files={"file": (name, data)})
            assert after.status_code == 200
            assert_matches(after.json()["results"][0], expected, CLASSES)
        assert json.loads(httpx.get(server.url + "/v1/health").text)["status"] == "ok"
    assert "Traceback" not in server.log(), server.log()


@pytest.mark.slow  # timing
@pytest.mark.alone  # waits measured in milliseconds
def test_batcher_answers_a_lone_request_at_once_and_waits_only_under_load():
    import asyncio
    import time

    from cnnarena.serve.batcher import MicroBatcher

    def slow_sum(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.05)  # a model slow enough that requests pile up behind it
        return batch.reshape(len(batch), -1).sum(1, keepdims=True).astype(np.float32)

    async def scenario() -> tuple[float, list[int]]:
        batcher = MicroBatcher(slow_sum, max_batch=8, max_wait_ms=1000)
        await batcher.start()
        t0 = time.perf_counter()
        lone = await batcher.submit(np.ones((1, 2, 2), np.uint8))
        lone_s = time.perf_counter() - t0
        assert lone.batch_size == 1 and lone.probs[0] == 4
        results = await asyncio.gather(*(batcher.submit(np.full((1, 2, 2), i, np.uint8)) for i in range(16)))
        assert [r.probs[0] for r in results] == [4 * i for i in range(16)]  # each answer is its own image's
        await batcher.stop()
        return lone_s, [r.batch_size for r in results]

    lone_s, sizes = asyncio.run(scenario())
    assert lone_s < 0.5, f"a lone request waited {lone_s:.2f}s for company on an idle server"
    assert max(sizes) == 8, sizes  # under load the batches fill up to max_batch


def test_explain_returns_the_overlay_of_the_predicted_class(client, run, samples):
    from urllib.parse import unquote

    from cnnarena.explain.cam import explain
    from cnnarena.explain.figures import overlay

    model = load_run_model(run)
    for name, data, expected in samples[:3]:
        response = client.post("/v1/explain", files={"file": (name, data)})
        assert response.status_code == 200 and response.headers["content-type"] == "image/png", response.text
        assert unquote(response.headers["x-label"]) == CLASSES[int(expected.argmax())] == \
            unquote(response.headers["x-target"])
        assert float(response.headers["x-probability"]) == pytest.approx(float(expected.max()), abs=1e-4)
        pixels = decode_for(model.meta, io.BytesIO(data))
        want = overlay(pixels, explain(model, torch.from_numpy(pixels[None])).heat[0])
        got = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
        assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 2  # the same map, enlarged
    other = client.post("/v1/explain", params={"target": "7", "method": "gradcam++"},
                        files={"file": samples[0][:2]})
    assert other.status_code == 200 and other.headers["x-target"] == "7" and other.headers["x-method"] == "gradcam++"
    assert other.headers["x-layer"].startswith("net.")


EXPLAIN_ONLY = {
    "unknown method": (dict(params={"method": "scorecam"}, files={"file": ("a.png", GOOD_PNG)}), 422, "method must be"),
    "unknown target": (dict(params={"target": "cat"}, files={"file": ("a.png", GOOD_PNG)}), 422, "not a class"),
    "two images": (dict(files=[("files", (f"{i}.png", GOOD_PNG)) for i in range(2)]), 413, "at most 1 per request"),
}


@pytest.mark.parametrize("case", [c for c in BAD_CASES if "top_k" not in c and c != "too many files"]
                         + list(EXPLAIN_ONLY))
def test_explain_answers_bad_requests_as_predict_does(client, case):
    kwargs, status, message = {**BAD_CASES, **EXPLAIN_ONLY}[case]
    response = client.post("/v1/explain", **_fresh(kwargs))
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"] and message in response.json()["error"]
    assert client.post("/v1/explain", files={"file": ("ok.png", GOOD_PNG)}).status_code == 200
