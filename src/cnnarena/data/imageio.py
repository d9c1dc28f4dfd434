"""Decoding images (files, or encoded bytes such as a Hugging Face dataset holds) into uint8 arrays of one size,
once, in parallel processes.

Every file becomes 8-bit L or RGB at size×size whatever it was on disk (palette, CMYK, 16-bit,
1-bit, with alpha, EXIF-rotated), so a whole dataset fits one tensor. Workers write straight into
a shared .npy memory map, so no pixels travel back through pipes.
Imports stay light (numpy, PIL): this module is what the worker processes load.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
# Below this many files, starting processes costs more than it saves.
PARALLEL_MIN_FILES = 200

# One decoded file: (original height, original width, was single-channel), or why it was skipped.
Result = tuple[int, int, bool] | str


class Unreadable(Exception):
    """A file that cannot be decoded; `reason` is the short word shown to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def decode_image(path: str | io.BytesIO, size: int, grayscale: bool) -> tuple[np.ndarray, tuple[int, int], bool]:
    """(pixels H×W for L or H×W×3 for RGB at size×size, original (h, w), single-channel source), from a file's path
    or an open binary stream."""
    if isinstance(path, str | Path) and Path(path).exists() and not is_regular_file(path):  # a FIFO blocks
        raise Unreadable("not a regular file (a FIFO, socket, device or broken link)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd but readable files (EXIF, palettes)
            with Image.open(path) as img:
                return decode_opened(img, size, grayscale)
    except Exception as e:  # decoding untrusted files: any failure means "skip this file"
        raise Unreadable(_reason(path, e)) from e


def die_with_parent(parent: int) -> None:
    """In a decode worker: the kernel kills it when the parent dies (a SIGKILLed `doctor` left ~400 MB workers
    decoding for nobody). Linux only (prctl PR_SET_PDEATHSIG); elsewhere the pool's own clean-up is all there is."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call: nobody is waiting
        os._exit(0)


def is_regular_file(path: str | Path) -> bool:
    """Whether opening `path` reads a file: not a FIFO (which blocks), socket, device, broken or looping link."""
    import os
    import stat

    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def decode_opened(img: Image.Image, size: int, grayscale: bool) -> tuple[np.ndarray, tuple[int, int], bool]:
    """decode_image for an image PIL has opened (header read, no pixels yet); raises what PIL raises."""
    width, height = img.size
    # JPEG only: let the decoder shrink by 1/2..1/8 on the fly, never below `size`.
    img.draft("L" if grayscale else None, (size, size))
    drafted = img.size
    img = ImageOps.exif_transpose(img)
    if img.size != drafted:  # rotated by 90°: the displayed image is h×w swapped
        width, height = height, width
    img = _to_8bit(img)
    single = img.mode == "L"
    if grayscale and not single:
        img = img.convert("L")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(img), (height, width), single


def _to_8bit(img: Image.Image) -> Image.Image:
    """L or RGB, 8 bits per channel; transparency composited on white."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_l(img)
    if mode in ("LA", "La"):
        return _on_white(img.convert("LA"), "L")
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        return _on_white(img.convert("RGBA"), "RGB")
    return img.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float gray to 8 bits by scaling (PIL's own convert would clip at 255)."""
    a = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and a.min() >= 0 and a.max() <= 65535):
        low, scale = 0.0, 255.0 / 65535.0  # 16-bit data, also what older PIL opens 16-bit PNGs as
    else:  # 32-bit or float data has no fixed range: stretch what is there
        low, high = float(a.min()), float(a.max())
        scale = 255.0 / (high - low) if high > low else 0.0
    return Image.fromarray(np.clip(np.rint((a - low) * scale), 0, 255).astype(np.uint8), "L")


def _on_white(img: Image.Image, mode: str) -> Image.Image:
    background = Image.new(mode, img.size, 255 if mode == "L" else (255, 255, 255))
    background.paste(img.convert(mode), mask=img.getchannel("A"))
    return background


def _reason(path, error: Exception) -> str:
    if isinstance(path, str | os.PathLike):  # file-like objects (uploads) have no path to look at
        if not os.path.exists(path):
            return "missing"
        if os.path.getsize(path) == 0:
            return "empty file"
    elif isinstance(path, io.BytesIO) and not path.getbuffer().nbytes:
        return "empty file"
    if isinstance(error, UnidentifiedImageError):
        return "not an image"
    if isinstance(error, Image.DecompressionBombError):
        return "too many pixels"
    message = str(error)
    if "truncated" in message.lower() or isinstance(error, EOFError):
        return "truncated"
    return f"unreadable: {message or type(error).__name__}"


def decode_chunk(items: list[str | bytes | None], start: int, out_path: str, size: int,
                 grayscale: bool) -> list[Result]:
    """Decode `items` (file paths, or an encoded image's bytes; None for a dataset row without an image) into rows
    start.. of the .npy memory map at `out_path` (run in a worker)."""
    out = np.load(out_path, mmap_mode="r+")
    results: list[Result] = []
    for offset, item in enumerate(items):
        if item is None:
            results.append("no image")
            continue
        try:
            pixels, (height, width), single = decode_image(io.BytesIO(item) if isinstance(item, bytes) else item,
                                                           size, grayscale)
        except Unreadable as e:
            results.append(e.reason)
            continue
        # H×W broadcasts over the channels (gray into RGB); H×W×3 is stored channel-first.
        out[start + offset] = pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        results.append((height, width, single))
    out.flush()
    return results


QUEUED_CHUNKS_PER_WORKER = 4  # enough to keep each worker busy; what the chunks hold stays bounded


def decode_in_workers(count: int, chunk_args: Callable[[int, int], tuple]) -> list[Result]:
    """One Result per row 0..count-1: each chunk of rows start..stop-1 is decode_chunk(*chunk_args(start, stop)),
    run in worker processes with a few chunks queued per worker (chunk_args is called as chunks are handed out, so
    the items it reads, such as a dataset's encoded images, are never all in memory at once), or in this process
    below PARALLEL_MIN_FILES rows; with a progress bar on a terminal."""
    from rich.console import Console  # imported here: workers never need it
    from rich.progress import Progress

    from ..runtime import settings

    if count < PARALLEL_MIN_FILES:
        return decode_chunk(*chunk_args(0, count))
    workers = os.cpu_count() or 1
    step = min(256, max(16, -(-count // (workers * 8))))
    starts = iter(range(0, count, step))
    results: list[Result] = [""] * count
    # fork: workers start at once and never re-run the caller's script (spawn and forkserver
    # do, which breaks scripts without a __main__ guard). Workers touch only PIL and numpy, never
    # the parent's torch threads, the same bargain torch's DataLoader workers make.
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    # transient: the bar vanishes once every image is decoded; none at all when stderr is a file.
    console = Console(stderr=True)
    live = settings().live_progress and console.is_terminal  # the CLI opts in (runtime.py)
    with (ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent,
                              initargs=(os.getpid(),)) as pool,
          Progress(console=console, transient=True, disable=not live) as bar):
        task = bar.add_task("decoding images", total=count)
        pending = {}

        def hand_out() -> None:
            start = next(starts, None)
            if start is not None:
                pending[pool.submit(decode_chunk, *chunk_args(start, min(start + step, count)))] = start

        for _ in range(workers * QUEUED_CHUNKS_PER_WORKER):
            hand_out()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                start = pending.pop(future)
                chunk = future.result()
                results[start:start + len(chunk)] = chunk
                bar.advance(task, len(chunk))
                hand_out()
    return results
