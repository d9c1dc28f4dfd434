"""Renaming or merging classes with a YAML/JSON mapping (e.g. Animals-10's `cane: dog`)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from .dataset import ImageSet, Source


def load_class_map(path: Path) -> dict[str, str]:
    """original class name → new name; several originals may share one new name (a merge)."""
    from ..documents import read_document

    return _validate(read_document(path, "class map"), path)


def _validate(data: object, path: Path) -> dict[str, str]:
    scalar = (str, int, float)  # YAML reads a folder named 1 as an int key
    if (not isinstance(data, dict) or not data
            or not all(isinstance(k, scalar) and isinstance(v, scalar) and str(v).strip() for k, v in data.items())):
        raise UserError(f"class map {path} must map class names to new names, e.g. `cane: dog` (one per line)")
    return {str(k): str(v).strip() for k, v in data.items()}


def check_names(mapping: dict[str, str], classes: list[str]) -> None:
    """A key that names no class is almost always a typo; say so rather than silently not renaming."""
    unknown = sorted(set(mapping) - set(classes))
    if unknown:
        raise UserError(f"class map names classes not in the dataset: {', '.join(unknown)} "
                        f"(its classes are: {', '.join(classes)})")


def remap_source(source: Source, mapping: dict[str, str]) -> Source:
    """The same source with renamed/merged classes (new classes sorted by name)."""
    check_names(mapping, source.classes)
    renamed = [mapping.get(c, c) for c in source.classes]
    classes = sorted(set(renamed))
    lut = torch.tensor([classes.index(name) for name in renamed], dtype=torch.long)

    def remap(s: ImageSet) -> ImageSet:
        return ImageSet(s.images, lut[s.labels], classes, s.ids)

    test = remap(source.test) if source.test is not None else None
    val = remap(source.val) if source.val is not None else None
    return Source(source.name, remap(source.pool), test, source.skipped, source.original_sizes, source.root, val)
