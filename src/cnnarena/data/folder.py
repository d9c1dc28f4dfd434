"""The class-per-subfolder layout (how RealWaste and Animals-10 unpack): root/<class>/**/<image>."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .imageio import is_image_name, is_regular_file

# Never classes or samples: OS and tool debris that travels inside zip files.
_JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


@dataclass
class Listing:
    """Image files of a dataset: ids relative to root (forward slashes) and their class names."""

    root: Path
    ids: list[str]
    labels: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # rejected before decoding


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _JUNK_NAMES


def list_class_folders(root: Path) -> Listing:
    """Every image under root/<class>/, nested folders included; classes are first-level folder names."""
    ids: list[str] = []
    labels: list[str] = []
    skipped: list[tuple[str, str]] = []
    empty: list[str] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if is_hidden(entry.name):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError as e:  # a link that loops back on itself: reported, never followed
            skipped.append((entry.name, f"unreadable ({e.strerror})"))
            continue
        if not is_dir:
            if is_image_name(entry.name):
                skipped.append((entry.name, "outside any class folder"))
            continue
        found, odd = _images_under(Path(entry.path), entry.name)
        skipped += odd
        if not found:
            empty.append(entry.name)
        ids += found
        labels += [entry.name] * len(found)
    if not ids:
        raise UserError(f"no images found in {root}: expected one subfolder per class holding image files "
                        "(.jpg .png .bmp .webp .gif .tif)")
    if empty:
        raise UserError(f"class folder{'s' if len(empty) > 1 else ''} {', '.join(map(repr, empty))} in {root} "
                        "hold no images: remove them or add images")
    return Listing(root, ids, labels, skipped)


def _images_under(folder: Path, prefix: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(image ids, skipped): what is not a regular file (a FIFO blocks whoever opens it; a socket, a device, a
    broken or looping link cannot be read) is skipped and reported, never opened."""
    found, skipped = [], []
    for directory, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))  # pruned: never descended into
        rel = Path(directory).relative_to(folder).as_posix()
        base = prefix if rel == "." else f"{prefix}/{rel}"
        for f in sorted(files):
            if is_hidden(f) or not is_image_name(f):
                continue
            if is_regular_file(os.path.join(directory, f)):
                found.append(f"{base}/{f}")
            else:
                skipped.append((f"{base}/{f}", "not a regular file (a FIFO, socket, device or broken link)"))
    return found, skipped
