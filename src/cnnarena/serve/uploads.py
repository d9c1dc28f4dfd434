"""The images a request to /v1/predict or /v1/explain carries, in any of the three forms an application sends:
- multipart/form-data, in field `file` (one image) or `files` (several): a browser form, curl -F;
- a raw body with `Content-Type: image/*`: fetch(url, {body: blob}), curl --data-binary, a phone's camera bytes;
- JSON `{"image": "<base64>"}` or `{"images": ["<base64>", ...]}`, optionally as data URLs (canvas.toDataURL()).
The body limits (size, stall) hold for all three: the middleware counts bytes before any of this runs.
"""

from __future__ import annotations

import base64
import binascii
import json

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

FIELDS = ("file", "files")
JSON_KEYS = ("image", "images")
FORMS = ("send images as multipart/form-data in field 'file' (one image) or 'files' (several), as a raw body "
         "with Content-Type image/*, or as JSON {\"image\": base64} / {\"images\": [base64, ...]}")


class ApiError(Exception):
    """A request the server refuses: the status, one line for the client, and any headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


async def read_uploads(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of every image in the request; anything else is a clear 4xx."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        uploads = await _multipart(request, max_files)
    elif ctype.startswith("image/"):
        uploads = [(f"body ({ctype[:40]})", await _body(request))]
        if not uploads[0][1]:
            raise ApiError(422, f"no image: the {ctype[:40]} body is empty")
    elif ctype == "application/json":
        uploads = _base64_images(await _body(request), max_files)
    else:
        raise ApiError(415, FORMS + (f", not {ctype[:60]}" if ctype else ""))
    if not uploads:
        raise ApiError(422, "no image: " + FORMS)
    return uploads


async def _body(request: Request) -> bytes:
    try:
        return await request.body()
    except ClientDisconnect:  # gone mid-upload: nobody to answer, but no traceback either
        raise ApiError(400, "client disconnected before the body was complete") from None


def _base64_images(body: bytes, max_files: int) -> list[tuple[str, bytes]]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "bad JSON body: " + FORMS) from None
    if not isinstance(doc, dict) or set(doc) - set(JSON_KEYS) or len(doc) != 1:
        raise ApiError(422, "a JSON body holds exactly one key, 'image' (base64 text) or 'images' (a list of them)")
    key, value = next(iter(doc.items()))
    items = [value] if key == "image" else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ApiError(422, f"'{key}' must be {'base64 text' if key == 'image' else 'a list of base64 texts'}")
    if len(items) > max_files:
        raise ApiError(413, f"too many images: at most {max_files} per request")
    return [(f"image {k + 1}", _decoded(item, k + 1)) for k, item in enumerate(items)]


def _decoded(text: str, number: int) -> bytes:
    if text.startswith("data:"):  # a data URL: data:image/png;base64,....
        head, _, text = text.partition(",")
        if not head.endswith(";base64"):
            raise ApiError(422, f"image {number}: a data URL must be base64 (data:image/...;base64,...)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"image {number} is not valid base64") from None


async def _multipart(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    try:
        form = await request.form(max_files=max_files, max_fields=8)
    except ClientDisconnect:
        raise ApiError(400, "client disconnected before the body was complete") from None
    except HTTPException as e:  # starlette's parser: bad boundary, too many files or fields...
        status = 413 if "too many files" in str(e.detail).lower() else 400
        detail = f"too many files: at most {max_files} per request" if status == 413 else e.detail
        raise ApiError(status, f"bad multipart body: {detail}") from None
    try:
        uploads: list[tuple[str, bytes]] = []
        for key, value in form.multi_items():
            if key not in FIELDS:
                raise ApiError(422, f"unexpected field {key!r}: send images in field 'file' or 'files'")
            if not isinstance(value, UploadFile):
                raise ApiError(422, f"field {key!r} must be a file upload, not text")
            uploads.append((value.filename or f"image {len(uploads) + 1}", await value.read()))
    finally:
        await form.close()
    return uploads
