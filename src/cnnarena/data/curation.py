"""A curation file: the user's decisions on the doctor's findings (leave an image out, or give it another label),
applied to the data in memory. The user's files are never moved, renamed or deleted.

curation.yaml, as `cnnarena doctor --review` writes it (and a person may write it by hand):

    dataset: ./photos          # what the decisions were made on (informational)
    exclude: [cat/img_17.jpg, dog/img_3.jpg]
    relabel: {cat/img_40.jpg: dog}
    keep: [cat/img_2.jpg]      # reviewed and kept as it is (so the review page remembers)

Ids are the doctor's: a file's path relative to the data folder (or a built-in dataset's ids).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import UserError
from ..files import atomic_write_text
from .dataset import ImageSet, Source


@dataclass(frozen=True)
class Curation:
    exclude: frozenset[str] = frozenset()
    relabel: tuple[tuple[str, str], ...] = ()  # (id, new class), sorted: hashable, so loaded sources can be cached
    keep: frozenset[str] = frozenset()
    dataset: str | None = None
    sha256: str = ""
    path: str = ""  # part of the key: a source cached under one file name records that name


def read_curation(path: str | Path) -> Curation:
    """The decisions in a curation file, checked: one clear error for anything malformed."""
    from ..documents import read_document

    path = Path(path)
    if not path.is_file():
        raise UserError(f"curation file not found: {path}")
    data = read_document(path, "curation file")
    exclude, relabel, keep = decisions(data, f"curation file {path}")
    return Curation(frozenset(exclude), tuple(sorted(relabel.items())), frozenset(keep),
                    str(data["dataset"]) if data.get("dataset") is not None else None,
                    hashlib.sha256(path.read_bytes()).hexdigest(), str(path))


def decisions(data: Any, where: str) -> tuple[set[str], dict[str, str], set[str]]:
    """(exclude, relabel, keep) of a curation document (a file's, or the review page's JSON), checked: one
    decision per image; anything malformed is one UserError naming `where`."""
    if not isinstance(data, dict) or not set(data) <= {"dataset", "exclude", "relabel", "keep", "version"}:
        raise UserError(f"{where} must be a mapping of exclude (a list of image ids), relabel (image id: class) "
                        "and keep (a list of image ids)")
    exclude, keep = _ids(data.get("exclude"), "exclude", where), _ids(data.get("keep"), "keep", where)
    relabel = data.get("relabel") or {}
    if not isinstance(relabel, dict) or not all(isinstance(k, str) and isinstance(v, str | int)
                                                 for k, v in relabel.items()):
        raise UserError(f"{where}: relabel must map image ids to class names")
    for first, second, what in ((exclude, set(relabel), "excluded and relabelled"),
                                (keep, exclude | set(relabel), "kept and excluded or relabelled")):
        both = first & second
        if both:
            raise UserError(f"{where}: {len(both)} image(s) both {what} (first: {sorted(both)[0][:200]})")
    return exclude, {k: str(v) for k, v in relabel.items()}, keep


def _ids(value: Any, key: str, where: str) -> set[str]:
    if value is None:
        return set()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: {key} must be a list of image ids")
    return set(value)


def write_curation(path: Path, *, dataset: str | None, exclude: set[str] | list[str], relabel: dict[str, str],
                   keep: set[str] | list[str]) -> None:
    header = ("# written by `cnnarena doctor --review`: train or study with --curation FILE to leave out and relabel\n"
              "# these images (the files themselves are never changed)\n")
    body = {"dataset": dataset, "exclude": sorted(exclude), "relabel": dict(sorted(relabel.items())),
            "keep": sorted(keep)}
    atomic_write_text(path, header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))


def apply_curation(source: Source, curation: Curation) -> Source:
    """The source without the excluded images and with the new labels. An id or a class that the data does not
    have is an error: a curation made for other data must not half-apply."""
    classes = source.classes
    bad = sorted({c for _, c in curation.relabel} - set(classes))
    if bad:
        raise UserError(f"curation {curation.path}: relabels to {', '.join(map(repr, bad[:3]))}, not a class of "
                        f"this data (its classes: {', '.join(classes)})")
    known = {i for s in source.official() for i in s.ids}
    unknown = sorted((curation.exclude | {i for i, _ in curation.relabel}) - known)
    if unknown:
        raise UserError(f"curation {curation.path}: {len(unknown)} image id(s) not in this data (first: "
                        f"{unknown[0]}): was it written for another dataset?")
    new_label = {i: classes.index(c) for i, c in curation.relabel}

    def curate(s: ImageSet | None) -> ImageSet | None:
        if s is None:
            return None
        kept = [k for k, i in enumerate(s.ids) if i not in curation.exclude]
        labels = s.labels.clone()
        for k, i in enumerate(s.ids):
            if i in new_label:
                labels[k] = new_label[i]
        index = torch.tensor(kept, dtype=torch.long)
        return ImageSet(s.images[index], labels[index], classes, [s.ids[k] for k in kept])

    return Source(source.name, curate(source.pool), curate(source.test), source.skipped,
                  _kept_sizes(source, curation.exclude), source.root, curate(source.val),
                  excluded=curation.exclude, curation=summary(curation))


def _kept_sizes(source: Source, exclude: frozenset[str]) -> list[tuple[int, int]] | None:
    if source.original_sizes is None:
        return None
    ids = [*source.pool.ids, *(source.test.ids if source.test is not None else [])]
    return [size for size, i in zip(source.original_sizes, ids, strict=False) if i not in exclude]


def summary(curation: Curation) -> dict[str, Any]:
    """What a run records of the curation it trained with (metrics.json, split.json, the reports)."""
    return {"file": curation.path, "sha256": curation.sha256, "excluded": len(curation.exclude),
            "relabelled": len(curation.relabel)}


def describe(record: dict[str, Any] | None) -> str | None:
    if not record:
        return None
    return (f"curation {Path(record['file']).name}: {record['excluded']} image(s) left out, "
            f"{record['relabelled']} relabelled")
