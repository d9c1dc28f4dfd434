"""The duplicate groups of a decoded dataset, kept beside its images: a second `train` or `study` on the same data
does not search again; nor does a second `doctor`, which keeps its near-duplicate pairs here too.

The key is a hash of the pixels themselves (and of the search's settings), so any change to the files, their size,
channels or class map (all of which change the decoded pixels) means a new search; a hash of 60,000 small images
takes a fraction of a second, the near-duplicate search of a photo folder several seconds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..files import atomic_write_text
from .cache import image_cache_dir
from .duplicates import Pair, near_pairs, split_groups

VERSION = 3  # raise when split_groups' or near_pairs' answer changes for the same pixels


def fingerprint(images: torch.Tensor, near: bool) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([VERSION, near, list(images.shape), str(images.dtype)]).encode())
    digest.update(memoryview(images.contiguous().numpy()).cast("B"))
    return digest.hexdigest()


def cached_split_groups(images: torch.Tensor, *, near: bool,
                        cache_dir: Path | None = None) -> tuple[list[list[int]], int, int]:
    """split_groups(images, near=near), read from the cache when this data was searched before."""
    directory = image_cache_dir(cache_dir) / "duplicates"
    path = directory / f"{fingerprint(images, near)}.json"
    try:
        saved = json.loads(path.read_text())
        return [list(map(int, g)) for g in saved["groups"]], int(saved["exact"]), int(saved["near"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not searched yet, or an unreadable entry: search again and replace it
    groups, exact, found = split_groups(images, near=near)
    _write(path, {"groups": groups, "exact": exact, "near": found})
    return groups, exact, found


def remember(images: torch.Tensor, *, near: bool, groups: list[list[int]], exact: int, found: int,
             cache_dir: Path | None = None) -> None:
    """What `cnnarena doctor` found, as split_groups(images, near=near) would: the next `train` or `study` on the
    same data reads it instead of searching again."""
    path = image_cache_dir(cache_dir) / "duplicates" / f"{fingerprint(images, near)}.json"
    _write(path, {"groups": groups, "exact": exact, "near": found})


def cached_near_pairs(images: torch.Tensor, exclude: set[tuple[int, int]], threshold: float,
                      cache_dir: Path | None = None) -> tuple[list[Pair], bool]:
    """near_pairs(images, exclude, threshold) for the doctor, read from the cache when these pixels were searched at
    this threshold before (`exclude`, the exact pairs, follows from the pixels)."""
    path = image_cache_dir(cache_dir) / "duplicates" / f"{fingerprint(images, True)}-pairs-{threshold!r}.json"
    try:
        saved = json.loads(path.read_text())
        return [Pair(int(a), int(b), "near", float(s)) for a, b, s in saved["pairs"]], bool(saved["capped"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not searched yet, or an unreadable entry: search again and replace it
    found, capped = near_pairs(images, exclude, threshold)
    _write(path, {"pairs": [[p.a, p.b, p.similarity] for p in found], "capped": capped})
    return found, capped


def _write(path: Path, entry: dict) -> None:
    """Whole or not at all (a reader never sees half an entry); a read-only cache costs a search next time."""
    try:
        atomic_write_text(path, json.dumps(entry))
    except OSError:
        pass
