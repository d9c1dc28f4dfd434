"""Uploaded bytes -> the model's input array, decoded exactly like the training files, or a clear 4xx.

The header is read first (format by content, pixel count), so a decompression bomb or a file that
only claims to be an image is refused before any pixel is decoded. Then the training decoder runs
on the bytes. It takes a BytesIO fine, but its error path expects a file path, so failures are
classified here from the original exception.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..evaluate.predict import decode_for

if TYPE_CHECKING:
    from ..models.base import ModelMeta

# What the training folders accept (imageio.IMAGE_SUFFIXES), as PIL format names (JPEG includes MPO).
# Passing them to Image.open also keeps PIL from trying riskier parsers (EPS runs Ghostscript).
FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF")
SUPPORTED = "JPEG, PNG, BMP, WebP, GIF, TIFF"
MAX_PIXELS = 40_000_000  # a 40 MP RGB image is 120 MB decoded: enough for phone photos, bounded per request


class BadImage(Exception):
    """An upload that cannot be classified: `status` is the HTTP code, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_upload(data: bytes, meta: ModelMeta, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """uint8 C×H×W at the model's data size, or BadImage (400 empty, 413 too many pixels, 415, 422)."""
    if not data:
        raise BadImage(400, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit follows
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:  # reads the header only
                width, height = img.size
    except UnidentifiedImageError:
        raise BadImage(415, f"not an image (or not a supported format: {SUPPORTED})") from None
    except Image.DecompressionBombError:
        raise BadImage(413, "too many pixels (decompression bomb?)") from None
    except Exception as e:  # a recognised signature with a broken header
        raise BadImage(422, f"corrupt image header: {_short(e)}") from None
    if width * height > max_pixels:
        raise BadImage(413, f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
    if width == 0 or height == 0:
        raise BadImage(422, f"image has no pixels ({width}x{height})")
    try:
        return decode_for(meta, io.BytesIO(data))
    except Exception as e:  # the training decoder's failure on untrusted bytes
        raise BadImage(*_classify(e)) from None


def _classify(error: BaseException) -> tuple[int, str]:
    original = error
    while original.__cause__ or original.__context__:  # decode_image re-raises; the root is what happened
        original = original.__cause__ or original.__context__  # type: ignore[assignment]
    if isinstance(original, Image.DecompressionBombError):
        return 413, "too many pixels (decompression bomb?)"
    message = str(original).lower()
    if isinstance(original, EOFError | struct.error) or "truncated" in message or "buffer" in message:
        return 422, "truncated image"  # the header was fine, so the data ends early
    return 422, f"corrupt image ({_short(original)})"


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]
