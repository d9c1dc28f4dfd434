"""A CSV of `path,label` rows; paths are relative to the CSV's folder (or absolute)."""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from ..errors import UserError
from .folder import Listing
from .imageio import is_image_name

PATH_COLUMNS = ("path", "filepath", "file", "filename", "image")
LABEL_COLUMNS = ("label", "class", "target")


def list_csv(csv_path: Path) -> Listing:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:  # -sig: Excel's byte-order mark
            rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read {csv_path}: {e}") from None
    if not rows:
        raise UserError(f"{csv_path} is empty: expected rows of path,label")
    path_col, label_col, has_header = _columns([c.strip().lower() for c in rows[0][1]])
    if has_header:
        rows = rows[1:]
    root = csv_path.parent
    ids: list[str] = []
    labels: list[str] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        if len(row) <= max(path_col, label_col) or not row[path_col].strip() or not row[label_col].strip():
            raise UserError(f"{csv_path} line {line}: expected a path and a label, got {row!r}")
        # Forward slashes whatever wrote the CSV, so ids are the same on every system.
        path = PurePosixPath(row[path_col].strip().replace("\\", "/")).as_posix()
        if path in seen:
            raise UserError(f"{csv_path} line {line}: {path} is already listed on line {seen[path]}")
        seen[path] = line
        ids.append(path)
        labels.append(row[label_col].strip())
    if not ids:
        raise UserError(f"{csv_path} lists no images")
    return Listing(root, ids, labels)


def _columns(first: list[str]) -> tuple[int, int, bool]:
    """(path column, label column, first row is a header)."""
    path_col = next((i for i, c in enumerate(first) if c in PATH_COLUMNS), None)
    label_col = next((i for i, c in enumerate(first) if c in LABEL_COLUMNS), None)
    if path_col is not None and label_col is not None:
        return path_col, label_col, True
    # Unknown names: still a header when its "path" is not an image file name.
    return 0, 1, not (first and is_image_name(first[0]))
