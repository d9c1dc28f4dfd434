"""Uploaded bytes -> the model's input array, decoded exactly like the training files, or a clear 4xx.

The header is read first (format by content, pixel count), so a decompression bomb or a file that
only claims to be an image is refused before any pixel is decoded. Then the training decoder runs
on the opened image; its failures are classified here from the original exception.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.imageio import decode_opened
from ..evaluate.predict import to_chw

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


def open_upload(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The upload opened by PIL with only its header read and checked (format, pixel count), or BadImage
    (400 empty, 413 too many pixels, 415 not an image, 422 broken header). decode_pixels does the rest."""
    if not data:
        raise BadImage(400, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit follows
            img = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except UnidentifiedImageError:
        raise BadImage(415, f"not an image (or not a supported format: {SUPPORTED})") from None
    except Image.DecompressionBombError:
        raise BadImage(413, "too many pixels (decompression bomb?)") from None
    except Exception as e:  # a recognised signature with a broken header
        raise BadImage(422, f"corrupt image header: {_short(e)}") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise BadImage(413, f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
    if width == 0 or height == 0:
        img.close()
        raise BadImage(422, f"image has no pixels ({width}x{height})")
    return img


def decode_pixels(img: Image.Image, meta: ModelMeta) -> np.ndarray:
    """An open_upload image decoded exactly like the training files (and closed), or BadImage 413/422."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd but readable files (EXIF, palettes)
            pixels, _, _ = decode_opened(img, meta.data_size[0], grayscale=meta.in_chans == 1)
        return to_chw(pixels, meta.in_chans)
    except Exception as e:  # the training decoder's failure on untrusted bytes
        raise BadImage(*_classify(e)) from None
    finally:
        img.close()


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
