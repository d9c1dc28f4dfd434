"""Load test of `cnnarena serve` on loopback, plus the model's in-process speed in PyTorch vs ONNX Runtime.

    python benchmarks/serve_load.py RUN_DIR [--requests 2000] [--concurrency 1,8,32] [--backend onnx]
                                    [--images-per-request 1]

Starts the server in a child process on 127.0.0.1 (a free port), sends `--requests` requests (one
image each unless `--images-per-request` says more) at each concurrency (each level also capped at
`--seconds`), and prints requests/s, images/s, p50/p95/p99 latency, errors and the server's mean
batch size per level; then images/s of the bare model at batch 1 and 64 in PyTorch eager and ONNX
Runtime. Everything also goes to a JSON file.
The client runs on the same machine (asyncio, one thread), so on few cores it competes with the
server: compare numbers taken on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from cnnarena.errors import UserError
from cnnarena.evaluate.predict import load_run_model
from cnnarena.serve.app import MAX_FILES
from cnnarena.serve.launch import ServerProcess


def make_uploads(meta, side: int | None, count: int = 16) -> list[bytes]:
    """Random images as files: PNG at the model's data size by default, JPEG when a larger side is asked."""
    rng = np.random.default_rng(0)
    side = side or meta.data_size[0]
    mode = "L" if meta.in_chans == 1 else "RGB"
    shape = (side, side) if mode == "L" else (side, side, 3)
    out = []
    for _ in range(count):
        buf = io.BytesIO()
        img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        img.save(buf, "PNG" if side <= 64 else "JPEG")
        out.append(buf.getvalue())
    return out


BOUNDARY = "cnnarena-load-boundary"


def http_request(port: int, images: list[bytes]) -> bytes:
    """One keep-alive multipart POST /v1/predict, built once and replayed (cheap for the client).

    One image goes in field `file`; several go in `files`, as a batch client would send them.
    """
    field = "file" if len(images) == 1 else "files"
    body = b"".join((f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"x{i}.png\"\r\n"
                     f"Content-Type: application/octet-stream\r\n\r\n").encode() + image + b"\r\n"
                    for i, image in enumerate(images)) + f"--{BOUNDARY}--\r\n".encode()
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length")
    return status, await reader.readexactly(length)


async def load_level(port: int, uploads: list[bytes], requests: int, concurrency: int, seconds: float,
                     images_per_request: int = 1) -> dict:
    """`requests` POSTs over `concurrency` keep-alive connections, stopping early at `seconds`.

    A raw asyncio HTTP/1.1 client: httpx's async pool costs so much CPU per request that at
    concurrency 32 on two cores it measured itself, not the server.
    """
    n = images_per_request
    payloads = [http_request(port, [uploads[(i + j) % len(uploads)] for j in range(n)]) for i in range(len(uploads))]
    latencies: list[float] = []
    server_ms: list[float] = []  # the server's own latency_ms: tells client-side queueing from server time
    errors = sent = 0
    deadline = time.perf_counter() + seconds
    before = httpx.get(f"http://127.0.0.1:{port}/v1/health").json()["batching"]

    async def connection() -> None:
        nonlocal sent, errors
        reader = writer = None
        while sent < requests and time.perf_counter() < deadline:
            payload = payloads[sent % len(payloads)]
            sent += 1
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(payload)
                await writer.drain()
                status, body = await asyncio.wait_for(read_response(reader), 30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, StopIteration):
                errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None  # start a fresh connection
                continue
            if status == 200:
                latencies.append(1000 * (time.perf_counter() - t0))
                server_ms.append(json.loads(body)["results"][0]["latency_ms"])
            else:
                errors += 1
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    after = httpx.get(f"http://127.0.0.1:{port}/v1/health").json()["batching"]
    batches = after["batches"] - before["batches"]
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"concurrency": concurrency, "requests": sent, "ok": len(latencies), "errors": errors,
            "seconds": round(elapsed, 3), "requests_per_s": round(len(latencies) / elapsed, 1),
            "images_per_request": n, "images_per_s": round(n * len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "server_p50_ms": round(float(np.median(server_ms)), 2) if server_ms else float("nan"),
            "server_mean_batch": round((after["images"] - before["images"]) / batches, 2) if batches else 0.0}


def in_process_speed(run_dir: Path, seconds: float, threads: int) -> list[dict]:
    """Images/s of the bare model (no HTTP, no decoding) at batch 1 and 64.

    All PyTorch runs first, then all ONNX Runtime runs, with a pause between: each runtime's idle
    threads spin for a while after a run and would otherwise slow the other one down.
    """
    import onnxruntime as ort
    import torch

    from cnnarena.evaluate.inference import measure_speed
    from cnnarena.export.onnx import INPUT_NAME, export_onnx

    if threads:  # the same thread count for both runtimes, or the comparison says little
        torch.set_num_threads(threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = load_run_model(run_dir).cpu().eval()
    rows = []
    for batch in (1, 64):
        speed = measure_speed(model, batch_size=batch, seconds=seconds)
        rows.append({"runtime": "pytorch eager", "batch": batch, "images_per_s": round(speed["images_per_second"], 1),
                     "ms_per_batch": round(speed["latency_ms"], 3)})
    time.sleep(1.0)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(run_dir, Path(tmp) / "m.onnx", model=model)
        session = ort.InferenceSession(str(Path(tmp) / "m.onnx"), options, providers=["CPUExecutionProvider"])
        for batch in (1, 64):
            x = np.random.default_rng(0).random((batch, model.meta.in_chans, *model.meta.data_size), np.float32)
            for _ in range(3):
                session.run(None, {INPUT_NAME: x})
            n, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < seconds or n < 3:
                session.run(None, {INPUT_NAME: x})
                n += 1
            rows.append({"runtime": "onnxruntime", "batch": batch, "images_per_s": round(n * batch / elapsed, 1),
                         "ms_per_batch": round(1000 * elapsed / n, 3)})
    return sorted(rows, key=lambda r: r["batch"])


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(str(r[c]).rjust(w) for c, w in zip(columns, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--seconds", type=float, default=120.0, help="time cap per level")
    parser.add_argument("--backend", default="onnx", choices=["onnx", "torch"])
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--images-per-request", type=int, default=1,
                        help="images per POST (field 'files' when > 1), as a batch client sends them")
    parser.add_argument("--upload-size", type=int, default=None, help="side of the uploaded images [model's]")
    parser.add_argument("--speed-seconds", type=float, default=2.0, help="per in-process measurement")
    parser.add_argument("--threads", type=int, default=0,
                        help="in-process: intra-op threads for both runtimes [0: each runtime's default]. On a "
                             "busy machine, 1 avoids threads waiting on each other")
    parser.add_argument("--out", type=Path, default=Path("artifacts/serve_load.json"))
    args = parser.parse_args()
    if not 1 <= args.images_per_request <= MAX_FILES:  # the server would refuse every request with a 413
        sys.exit(f"error: --images-per-request must be 1..{MAX_FILES} (the server's files-per-request limit)")

    try:
        meta = load_run_model(args.run_dir).meta
    except UserError as e:
        sys.exit(f"error: {e}")
    uploads = make_uploads(meta, args.upload_size)
    levels = [int(c) for c in args.concurrency.split(",")]
    server_args = ["--backend", args.backend, "--max-batch", str(args.max_batch), "--max-wait-ms",
                   str(args.max_wait_ms), "--log-level", "warning"]
    print(f"{meta.name} ({args.backend}), {args.requests} requests per level, uploads "
          f"{args.upload_size or meta.data_size[0]}px", file=sys.stderr)
    with ServerProcess(args.run_dir, *server_args) as server:
        asyncio.run(load_level(server.port, uploads, min(50, args.requests), 4, 30))  # warm-up
        http = [asyncio.run(load_level(server.port, uploads, args.requests, c, args.seconds, args.images_per_request))
                for c in levels]
    print(f"HTTP (loopback, {args.images_per_request} image(s) per request)")
    print(table(http, ["concurrency", "requests", "errors", "requests_per_s", "images_per_s", "p50_ms", "p95_ms",
                       "p99_ms", "server_p50_ms", "server_mean_batch"]))
    speed = in_process_speed(args.run_dir, args.speed_seconds, args.threads)
    print(f"\nin-process model speed (no HTTP, no decoding; threads: {args.threads or 'default'})")
    print(table(speed, ["runtime", "batch", "images_per_s", "ms_per_batch"]))
    result = {"run_dir": str(args.run_dir.resolve()), "model": meta.name, "backend": args.backend,
              "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
              "upload_side": args.upload_size or meta.data_size[0], "images_per_request": args.images_per_request,
              "http": http, "in_process": speed,
              "in_process_threads": args.threads or "default",
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()},
              "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    from benchmarks import opt_in

    opt_in()
    main()
