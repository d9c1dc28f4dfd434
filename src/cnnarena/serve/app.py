"""The HTTP app: POST /v1/predict, POST /v1/explain, GET /v1/health, GET /v1/model, and the web page at /.

Every bad request gets a JSON 4xx `{"error": "..."}` and the server keeps serving: limits are checked
in the cheapest order (body size from the header, then while streaming; file count while parsing;
format and pixel count from the image header; only then pixels are decoded).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..evaluate.predict import top_k as rank_classes
from .backend import Backend, load_backend
from .batcher import Busy, InferenceFailed, MicroBatcher
from .decode import MAX_PIXELS, BadImage, decode_pixels, open_upload
from .explainer import ExplainBusy, Explainer
from .protocol import HEADER_BYTES
from .uploads import ApiError, read_uploads

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_FILES = 16
# Images up to this size (a 128×128 webcam frame, any 28-64 px dataset image) decode on the event
# loop; bigger ones go to the decoder threads so that they never stall other requests.
INLINE_DECODE_PIXELS = 128 * 128


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    pass


class _BodyStalled(Exception):
    pass


BODY_STALL_SECONDS = 15.0  # a client that sends nothing for this long mid-upload is cut off (408)


class HeaderLimit:
    """431 for request headers over `max_bytes` in all: h11 refuses larger ones only while they are incomplete, so a
    head that arrives in one read passed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > self.max_bytes:
            await _error(431, f"request headers too large: the limit is {self.max_bytes:,} bytes",
                         {"Connection": "close"})(scope, receive, send)
            return
        await self.app(scope, receive, send)


class InFlightLimit:
    """503 at once for a request beyond `limit` being handled (idle connections count for nothing: they are the
    protocol's to close)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            await _error(503, f"busy: {self.limit} requests are being handled; try again",
                         {"Retry-After": "1"})(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class BodyLimit:
    """413 for bodies over `max_bytes`: at once from Content-Length, else as soon as the stream passes it."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_reject: Callable[[], None] = lambda: None,
                 stall_seconds: float = BODY_STALL_SECONDS) -> None:
        self.app, self.max_bytes, self.on_reject, self.stall_seconds = app, max_bytes, on_reject, stall_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _error(413, f"request body too large: the limit is {self.max_bytes:,} bytes",
                           {"Connection": "close"})
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                self.on_reject()
                await _error(400, "invalid Content-Length header")(scope, receive, send)
                return
            if int(length) > self.max_bytes:  # refused before a single body byte is read
                self.on_reject()
                await too_large(scope, receive, send)
                return
        seen, exceeded, stalled, started = 0, False, False, False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded, stalled
            try:
                message = await asyncio.wait_for(receive(), self.stall_seconds)
            except TimeoutError:  # a stalled upload must not hold a connection and a worker for ever
                stalled = True
                raise _BodyStalled from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # chunked upload without a length: stop reading here
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded or stalled:  # whatever the app answers to a cut-off body is replaced by the 413
                return
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except (_BodyTooLarge, _BodyStalled):
            pass
        if stalled and not started:
            self.on_reject()
            await _error(408, f"request body stalled: nothing received for {self.stall_seconds:g} s",
                         {"Connection": "close"})(scope, receive, send)
            return
        if exceeded and not started:
            self.on_reject()
            await too_large(scope, receive, send)


class Server:
    """State shared by the routes: the backend, the batcher, the limits and counters."""

    def __init__(self, backend: Backend, *, max_batch: int, max_wait_ms: float, max_pixels: int,
                 max_files: int, top_k: int) -> None:
        self.backend = backend
        self.batcher = MicroBatcher(backend.infer, max_batch=max_batch, max_wait_ms=max_wait_ms)
        self.explainer = Explainer(backend.model)
        self.max_pixels, self.max_files, self.top_k = max_pixels, max_files, top_k
        self.max_batch, self.max_wait_ms = max_batch, max_wait_ms
        # Decoding gets its own bounded pool: a burst of large uploads never decodes (and allocates)
        # more images at once than there are threads, and never delays the inference thread.
        self.decoder = ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="cnnarena-decode")
        self.started = time.time()
        self.requests = self.images = self.rejected = 0

    def count_rejected(self) -> None:
        self.rejected += 1

    async def decode(self, data: bytes) -> Any:
        img = open_upload(data, self.max_pixels)  # header only: cheap, and refuses bombs before decoding
        width, height = img.size
        if width * height <= INLINE_DECODE_PIXELS:  # tens of µs: a thread hand-off would cost more
            return decode_pixels(img, self.backend.meta)
        return await asyncio.get_running_loop().run_in_executor(self.decoder, decode_pixels, img, self.backend.meta)


def create_app(run_dir: Path, *, backend: str = "onnx", max_batch: int = 32, max_wait_ms: float = 2.0,
               max_body_bytes: int = MAX_BODY_BYTES, max_pixels: int = MAX_PIXELS, max_files: int = MAX_FILES,
               top_k: int = 5, body_timeout_s: float = BODY_STALL_SECONDS, max_in_flight: int = 64,
               cors_origins: list[str] | tuple[str, ...] = ()) -> FastAPI:
    """Load the model now (a bad run directory fails here, before any port is opened)."""
    server = Server(load_backend(Path(run_dir), backend), max_batch=max_batch, max_wait_ms=max_wait_ms,
                    max_pixels=max_pixels, max_files=max_files, top_k=top_k)
    meta = server.backend.meta

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await server.batcher.start()
        yield
        await server.batcher.stop()
        server.decoder.shutdown(wait=False)
        server.explainer.close()

    app = FastAPI(title="cnnarena", summary=f"{meta.name}: {meta.num_classes} classes", lifespan=lifespan)
    app.state.server = server
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, on_reject=server.count_rejected,
                       stall_seconds=body_timeout_s)
    app.add_middleware(InFlightLimit, limit=max_in_flight)
    if cors_origins:  # browsers' preflights are answered before any limit but the header size's
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type"], max_age=600,
                           expose_headers=["X-Label", "X-Probability", "X-Target", "X-Layer", "X-Method"])
    app.add_middleware(HeaderLimit, max_bytes=HEADER_BYTES)  # added last: the outermost
    _install_error_handlers(app, server)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_info_routes(app, server)
    _add_predict_route(app, server)
    _add_explain_route(app, server)
    return app


def _add_info_routes(app: FastAPI, server: Server) -> None:
    """The web page, /v1/health and /v1/model."""
    meta = server.backend.meta

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": meta.name, "backend": server.backend.name,
                "uptime_s": round(time.time() - server.started, 1), "requests": server.requests,
                "images": server.images, "rejected": server.rejected,
                "batching": {"max_batch": server.max_batch, "max_wait_ms": server.max_wait_ms,
                             "queue_depth": server.batcher.queue_depth, **server.batcher.stats.to_json()}}

    @app.get("/v1/model")
    async def model_card() -> dict[str, Any]:
        return public_card(server.backend.card)


def _add_predict_route(app: FastAPI, server: Server) -> None:
    meta = server.backend.meta

    @app.post("/v1/predict", openapi_extra=_PREDICT_DOC)
    async def predict(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        # top_k is read by hand: FastAPI's per-request parameter validation cost more than the inference.
        k = _top_k(request.query_params.get("top_k"), server.top_k, meta.num_classes)
        uploads = await read_uploads(request, server.max_files)
        images = await asyncio.gather(*(_decode_named(server, name, data) for name, data in uploads))
        try:
            results = await asyncio.gather(*(server.batcher.submit(x) for x in images))
        except Busy as e:
            raise ApiError(503, f"server busy ({e}); retry shortly", {"Retry-After": "1"}) from None
        except InferenceFailed as e:
            raise ApiError(500, f"inference failed: {e}") from None
        done_ms = 1000 * (time.perf_counter() - t0)
        server.requests += 1
        server.images += len(images)
        out = []
        for (name, _), r in zip(uploads, results, strict=True):
            ranked = rank_classes(r.probs[None], meta.classes, k)[0]
            top = [{"label": label, "probability": round(p, 6)} for label, p in ranked]
            out.append({"filename": name, "label": top[0]["label"], "probability": top[0]["probability"],
                        "predictions": top, "latency_ms": round(done_ms, 2), "batch_size": r.batch_size,
                        "inference_ms": round(r.inference_ms, 2)})
        # A ready response: FastAPI would otherwise walk the dict through jsonable_encoder (5x the cost).
        return JSONResponse({"model": meta.name, "backend": server.backend.name, "results": out})


def _add_explain_route(app: FastAPI, server: Server) -> None:
    meta = server.backend.meta

    @app.post("/v1/explain", openapi_extra=_EXPLAIN_DOC)
    async def explain(request: Request) -> Response:
        from urllib.parse import quote

        from ..explain.cam import FAST_METHODS

        method = request.query_params.get("method", "gradcam")
        if method not in FAST_METHODS:
            raise ApiError(422, f"method must be one of {', '.join(FAST_METHODS)}, got {method[:40]!r}")
        target = request.query_params.get("target")
        if target is not None and target not in meta.classes:
            raise ApiError(422, f"target {target[:60]!r} is not a class of this model")
        uploads = await read_uploads(request, 1)
        name, data = uploads[0]
        image = await _decode_named(server, name, data)
        try:
            heat = await server.explainer.heat_map(image, None if target is None else meta.classes.index(target),
                                                   method)
        except ExplainBusy as e:
            raise ApiError(503, f"server busy ({e}); retry shortly", {"Retry-After": "1"}) from None
        server.requests += 1
        # class names may be any Unicode: headers carry them percent-encoded
        return Response(heat.png, media_type="image/png", headers={
            "X-Label": quote(heat.label), "X-Probability": f"{heat.probability:.6f}", "X-Target": quote(heat.target),
            "X-Layer": heat.layer, "X-Method": heat.method, "Cache-Control": "no-store"})


def _top_k(raw: str | None, default: int, num_classes: int) -> int:
    if raw is None:
        return default
    try:
        k = int(raw)
    except ValueError:
        raise ApiError(422, f"top_k must be an integer, got {raw[:40]!r}") from None
    if not 1 <= k <= num_classes:
        raise ApiError(422, f"top_k must be between 1 and {num_classes}, got {k}")
    return k


async def _decode_named(server: Server, name: str, data: bytes) -> Any:
    try:
        return await server.decode(data)
    except BadImage as e:
        raise ApiError(e.status, f"{name}: {e.message}") from None


def _install_error_handlers(app: FastAPI, server: Server) -> None:
    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        if exc.status < 500:
            server.count_rejected()
        return _error(exc.status, exc.message, exc.headers)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        server.count_rejected()
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        server.count_rejected()
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return _error(422, "; ".join(parts) or "invalid request")

    async def internal_error(_request: Request, _exc: Exception) -> JSONResponse:
        return _error(500, "internal server error (see the server log)")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


_PREDICT_DOC = {
    "parameters": [{"name": "top_k", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
                    "description": "how many classes to return per image [the server's --top-k]"}],
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"},
                           "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object", "properties": {
            "image": {"type": "string", "description": "base64, or a data: URL"},
            "images": {"type": "array", "items": {"type": "string"}}}}}}},
}


_EXPLAIN_DOC = {
    "summary": "Heat map (class activation map) of one image, overlaid on it, as PNG",
    "parameters": [
        {"name": "method", "in": "query", "required": False, "schema": {"type": "string", "default": "gradcam"},
         "description": "gradcam | gradcam++ | hirescam | xgradcam | layercam | eigencam"},
        {"name": "target", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "the class to explain [the predicted class]"}],
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}}}},
    "responses": {"200": {"description": "the overlay; headers X-Label, X-Probability (the prediction), X-Target, "
                                         "X-Layer, X-Method (what the map explains; names percent-encoded)",
                          "content": {"image/png": {}}}},
}


def public_card(card: dict[str, Any]) -> dict[str, Any]:
    """The model card without where things lie on the server's disk: the run and the data by their names only."""
    card = _names_only(card, ("source_run", "data", "run_dir"))
    card["metrics"] = _names_only(card.get("metrics") or {}, ("data", "run_dir"))
    return card


def _names_only(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    values = dict(values)
    for key in keys:
        if isinstance(values.get(key), str) and ("/" in values[key] or "\\" in values[key]):
            values[key] = Path(values[key].replace("\\", "/")).name
    return values
