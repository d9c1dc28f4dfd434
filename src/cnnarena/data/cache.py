"""The user cache: downloaded datasets, and image files decoded once into uint8 memory maps.

A decoded set is `<key>.npy` (N×C×S×S uint8, memory-mapped on load) plus `<key>.json` (ids,
labels, classes, skipped files, original sizes). The key hashes everything the pixels depend on
(root, file list with sizes and mtimes, labels, size, mode, class map), so a changed file gives a
new key, and a load under a known key never decodes an image again. Both files are written under
temporary names and renamed into place, the JSON last: a crash leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import runtime
from ..errors import UserError
from . import imageio

CACHE_VERSION = 1  # bump when decoding changes, so old entries are not reused
_COPY_ROWS = 4096  # rows per copy when compacting, to bound memory


def user_cache_dir() -> Path:
    """Downloaded datasets live here (runtime.cache_dir(): $CNNARENA_CACHE or ~/.cache/cnnarena)."""
    return runtime.cache_dir()


def image_cache_dir(cache_dir: Path | None = None) -> Path:
    """Decoded images: `cache_dir` when given, else images/ under the cache root."""
    return Path(cache_dir) if cache_dir is not None else user_cache_dir() / "images"


@dataclass
class Decoded:
    """Readable files of a listing; images is a copy-on-write memory map N×C×S×S."""

    images: np.ndarray
    ids: list[str]
    labels: list[str]
    skipped: list[tuple[str, str]]
    original_sizes: list[tuple[int, int]]


def cache_key(root: Path, ids: list[str], labels: list[str], image_size: int, grayscale: bool | None,
              class_map: dict[str, str] | None) -> str:
    stats = []
    for path in (str(root / i) for i in ids):
        try:
            st = os.stat(path)
            stats.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((-1, -1))  # missing now; appearing later changes the key
    order = sorted(range(len(ids)), key=ids.__getitem__)
    payload = {
        "version": CACHE_VERSION, "root": str(root.resolve()), "size": image_size, "grayscale": grayscale,
        "class_map": sorted((class_map or {}).items()),
        "files": [(ids[i], labels[i], *stats[i]) for i in order],
    }
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]


def load_or_decode(root: Path, ids: list[str], labels: list[str], *, image_size: int, grayscale: bool | None,
                   class_map: dict[str, str] | None, cache_dir: Path | None) -> Decoded:
    """Decoded pixels of root/id for every id (labels are class names), from the cache when possible.

    grayscale: True → 1 channel; False → 3; None → 1 only when every readable file is single-channel.
    """
    directory = image_cache_dir(cache_dir)
    key = cache_key(root, ids, labels, image_size, grayscale, class_map)
    cached = _read(directory, key)
    if cached is not None:
        return cached
    decode_into_cache(directory, key, ids, labels, lambda start, stop: [str(root / i) for i in ids[start:stop]],
                      image_size=image_size, grayscale=grayscale, where=str(root))
    cached = _read(directory, key)
    assert cached is not None, key
    return cached


def decode_into_cache(directory: Path, key: str, ids: list[str], labels: list, items: Callable[[int, int], list], *,
                      image_size: int, grayscale: bool | None, where: str) -> None:
    """Decode the images `ids` name into the cache entry `key`: items(start, stop) gives rows start..stop-1 as file
    paths or encoded bytes (imageio.decode_chunk's items), decoded in worker processes straight into a memory map.
    The entry keeps, for each readable image, its id, its label (from `labels`, one per id), its original size and
    whether it was single-channel; unreadable ones are listed as skipped. A UserError when the cache cannot be
    written or no image is readable (`where` names the data in that message)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the image cache {directory} ({e.strerror}): "
                        "set $CNNARENA_CACHE to a writable folder (decoded images go to its images/ folder)") from None
    remove_orphans(directory)
    tag = f"{os.getpid()}-{_host()}-{uuid.uuid4().hex[:8]}"
    raw_path, npy_tmp, json_tmp = (directory / f".{key}.{tag}.{part}" for part in ("raw.npy", "npy", "json"))
    try:
        raw = np.lib.format.open_memmap(raw_path, mode="w+", dtype=np.uint8,
                                        shape=(len(ids), 1 if grayscale else 3, image_size, image_size))
        del raw  # workers open it themselves; closing flushes the header
        results = imageio.decode_in_workers(
            len(ids), lambda start, stop: (items(start, stop), start, str(raw_path), image_size, bool(grayscale)))
        keep = [i for i, r in enumerate(results) if not isinstance(r, str)]
        skipped = [(ids[i], r) for i, r in enumerate(results) if isinstance(r, str)]
        if not keep:
            raise UserError(f"no readable images in {where}: {describe_skipped(skipped)}")
        channels = 1 if grayscale or (grayscale is None and all(results[i][2] for i in keep)) else 3
        _compact(raw_path, npy_tmp, keep, channels)
        meta = {"ids": [ids[i] for i in keep], "labels": [labels[i] for i in keep], "skipped": skipped,
                "original_sizes": [results[i][:2] for i in keep], "single": [results[i][2] for i in keep]}
        commit_entry(directory, key, npy_tmp, json_tmp, meta)
    finally:
        for path in (raw_path, npy_tmp, json_tmp):
            path.unlink(missing_ok=True)


def remove_orphans(directory: Path) -> None:
    """Temporary files of decodes on this machine whose process is gone (killed: its `finally` never ran), named
    .KEY.PID-HOST-TAG.*; another machine's (a cache on a shared disk) are left alone."""
    for path in directory.glob(f".*.*-{_host()}-*.*"):
        parts = path.name.split(".")
        pid = parts[2].split("-")[0] if len(parts) >= 4 else ""
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _host() -> str:
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _compact(raw_path: Path, out_path: Path, keep: list[int], channels: int) -> None:
    """Drop the rows of skipped files and the copies of a gray channel; rename when nothing to drop."""
    raw = np.load(raw_path, mmap_mode="r")
    if len(keep) == raw.shape[0] and channels == raw.shape[1]:
        del raw
        os.replace(raw_path, out_path)
        return
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(len(keep), channels, *raw.shape[2:]))
    index = np.asarray(keep)
    for start in range(0, len(index), _COPY_ROWS):
        out[start:start + _COPY_ROWS] = raw[index[start:start + _COPY_ROWS], :channels]
    out.flush()


def commit_entry(directory: Path, key: str, npy_tmp: Path, json_tmp: Path, meta: dict) -> None:
    """Put a decoded set written to npy_tmp into the cache under key, with its metadata (written to json_tmp first):
    the JSON is renamed last, so its presence marks a complete entry."""
    json_tmp.write_text(json.dumps(meta))
    os.replace(npy_tmp, directory / f"{key}.npy")
    os.replace(json_tmp, directory / f"{key}.json")


def read_entry(directory: Path, key: str) -> tuple[np.ndarray, dict] | None:
    """A complete cache entry (images memory-mapped copy-on-write, metadata), or None when absent or damaged."""
    try:
        meta = json.loads((directory / f"{key}.json").read_text())
        images = np.load(directory / f"{key}.npy", mmap_mode="c")  # copy-on-write: torch wants writable
    except (OSError, ValueError):
        return None  # absent or damaged: decode again
    if images.ndim != 4 or images.shape[0] != len(meta["ids"]):
        return None
    return images, meta


def _read(directory: Path, key: str) -> Decoded | None:
    entry = read_entry(directory, key)
    if entry is None:
        return None
    images, meta = entry
    return Decoded(images, meta["ids"], meta["labels"], [tuple(s) for s in meta["skipped"]],
                   [tuple(s) for s in meta["original_sizes"]])


def describe_skipped(skipped: list[tuple[str, str]], limit: int = 3) -> str:
    """'a.jpg (truncated), b.png (empty file), ...' for one-line messages."""
    text = ", ".join(f"{path} ({reason})" for path, reason in skipped[:limit])
    return text + (", ..." if len(skipped) > limit else "")


def download(url: str, dest: Path, md5: str, how_to: str) -> None:
    """Fetch url to dest, checking its md5; dest appears only when complete and correct."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        from rich.console import Console
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        console = Console(stderr=True)
        live = runtime.settings().live_progress and console.is_terminal  # the CLI opts in (runtime.py)
        with (urllib.request.urlopen(url, timeout=30) as response, part.open("wb") as out,
              Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                       console=console, transient=True, disable=not live) as bar):
            length = response.headers.get("Content-Length")
            task = bar.add_task(f"downloading {dest.name}", total=int(length) if length else None)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                bar.advance(task, len(chunk))
        if digest.hexdigest() != md5:
            raise UserError(f"download of {url} is corrupt (md5 {digest.hexdigest()}, expected {md5}): "
                            f"try again, or {how_to}")
        os.replace(part, dest)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise UserError(f"could not download {url} ({reason}): {how_to}") from None
    finally:
        part.unlink(missing_ok=True)
