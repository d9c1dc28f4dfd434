"""Stratified, seeded train/val/test splits, written as a manifest another run can reuse.

Every model in a comparison must see the same images, so the split is data (a JSON file of
sample ids), not a seed that happens to be shared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..files import atomic_write_text
from .dataset import ImageSet, Source
from .stratify import stratified_train_test_split


@dataclass
class Split:
    train: ImageSet
    val: ImageSet
    test: ImageSet

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _stratified_cut(labels: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, cut) with `frac` of every class in `cut`."""
    index = np.arange(len(labels))
    if frac <= 0:
        return index, index[:0]
    try:
        kept, cut = stratified_train_test_split(index, labels, frac, seed)
    except ValueError as e:  # a class too small to appear on both sides
        raise UserError(f"cannot make a stratified split: {e}") from None
    return np.sort(kept), np.sort(cut)


def make_split(source: Source, *, val_frac: float = 0.2, test_frac: float = 0.2, seed: int = 0,
               groups: list[list[int]] | None = None) -> Split:
    """Official test split kept when the dataset has one; otherwise carve test from the pool too.

    groups: pool indices that must stay on one side (duplicate groups, data/duplicates.py): each group is cut as
    its first member and follows it. Without groups (or with none of size > 1) the split is the plain stratified one.
    """
    if not (0 < val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise UserError(f"bad split fractions val={val_frac} test={test_frac}: each in (0,1), sum below 1")
    pool = source.pool
    labels = pool.labels.numpy()
    follow = _followers(len(pool), groups or [])
    if source.test is not None and source.val is not None:  # the dataset's own three splits, as they are
        return Split(pool, source.val, source.test)
    if source.test is not None:
        train_idx, val_idx = _grouped_cut(labels, np.arange(len(pool)), follow, val_frac, seed)
        return Split(pool.subset(train_idx), pool.subset(val_idx), source.test)
    if test_frac <= 0:
        raise UserError(f"{source.name} has no official test split: --test-frac must be above 0")
    rest, test_idx = _grouped_cut(labels, np.arange(len(pool)), follow, test_frac, seed)
    # val_frac is a share of the whole pool, so 0.2/0.2 gives the reports' 60/20/20.
    train_idx, val_idx = _grouped_cut(labels, rest, follow, val_frac / (1 - test_frac), seed)
    return Split(pool.subset(train_idx), pool.subset(val_idx), pool.subset(test_idx))


def _followers(n: int, groups: list[list[int]]) -> dict[int, list[int]]:
    """First member of each group -> the other members (who follow it to its side of every cut)."""
    return {min(g): sorted(set(g) - {min(g)}) for g in groups if len(g) > 1}


def _grouped_cut(labels: np.ndarray, index: np.ndarray, follow: dict[int, list[int]], frac: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, cut) of `index`, stratified on the group leaders; followers land where their leader does."""
    followers = {m for members in follow.values() for m in members}
    leaders = np.array([i for i in index if i not in followers], dtype=np.int64) if followers else index
    kept, cut = _stratified_cut(labels[leaders], frac, seed)
    kept, cut = leaders[kept], leaders[cut]
    if follow:
        kept = np.sort(np.concatenate([kept, [m for i in kept for m in follow.get(int(i), ())]]).astype(np.int64))
        cut = np.sort(np.concatenate([cut, [m for i in cut for m in follow.get(int(i), ())]]).astype(np.int64))
    return kept, cut


def subsample(data: ImageSet, fraction: float, seed: int) -> ImageSet:
    """A stratified `fraction` of a training set (for data-fraction learning curves)."""
    if fraction >= 1:
        return data
    _, keep = _stratified_cut(data.labels.numpy(), fraction, seed)
    return data.subset(keep)


def write_manifest(split: Split, path: Path, *, source_name: str, seed: int,
                   groups: list[list[str]] | None = None, curation: dict | None = None) -> None:
    """groups: ids of the duplicate groups the split kept together (recorded so a reader can check); curation:
    the curation the split's data went through (curation.summary)."""
    manifest = {
        "source": source_name,
        "seed": seed,
        "classes": split.train.classes,
        "sizes": split.sizes(),
        "train": split.train.ids,
        "val": split.val.ids,
        "test": split.test.ids,
    }
    if groups:
        manifest["groups"] = groups
    if curation:
        manifest["curation"] = curation
    atomic_write_text(path, json.dumps(manifest))


MAX_MANIFEST_BYTES = 512 << 20


def _check_curation(path: Path, recorded: object, source: Source) -> None:
    """A split made from curated data is rebuilt only with the same curation file, unchanged (its sha256)."""
    if not isinstance(recorded, dict) or not recorded.get("sha256"):
        return
    if recorded["sha256"] != (source.curation or {}).get("sha256"):
        now = f"the curation {source.curation['file']} differs" if source.curation else "no --curation was given"
        raise UserError(f"split {path} was made with the curation {recorded.get('file')} (sha256 "
                        f"{str(recorded['sha256'])[:12]}), but {now}: give that file, unchanged, or a new --out")


def load_manifest(path: Path, source: Source) -> Split:
    """Rebuild a split from a manifest's ids; every id must exist in this source (or be one its curation left
    out). A manifest lists every image, so
    it may be large, but not larger than MAX_MANIFEST_BYTES (JSON has no aliases: its size bounds its value)."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise UserError(f"split manifest {path} is {size / 2**20:,.0f} MB: more than the "
                            f"{MAX_MANIFEST_BYTES >> 20} MB a manifest of ten million images needs")
        manifest = json.loads(Path(path).read_text())
        parts = {k: manifest[k] for k in ("train", "val", "test")}
    except FileNotFoundError:
        raise UserError(f"split manifest not found: {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, IsADirectoryError, RecursionError):
        raise UserError(f"{path} is not a cnnarena split manifest (needs train/val/test id lists)") from None
    if not all(isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in parts.values()):
        raise UserError(f"{path}: train, val and test must be lists of image ids")
    empty = [k for k in ("train", "val") if not parts[k]]
    if empty:  # no validation images: the "best" epoch would be picked on nothing
        raise UserError(f"split {path}: the {' and '.join(empty)} list is empty: every run needs training and "
                        "validation images")
    overlap = set(parts["train"]) & (set(parts["val"]) | set(parts["test"]))
    if overlap:
        raise UserError(f"split {path}: {len(overlap)} id(s) are in train and in val or test (first: "
                        f"{sorted(overlap)[0]})")
    _check_curation(path, manifest.get("curation"), source)
    if manifest.get("classes") not in (None, source.classes):
        raise UserError(f"split {path} was made for classes {manifest['classes']}, data has {source.classes}")
    sets = source.official()
    where = {sid: (s, i) for s in range(len(sets)) for i, sid in enumerate(sets[s].ids)}
    out = {}
    for part, ids in parts.items():
        ids = [sid for sid in ids if sid not in source.excluded]  # a curation left them out
        if not ids and part != "test":
            raise UserError(f"split {path}: the curation left no {part} images")
        missing = [sid for sid in ids if sid not in where]
        if missing:
            raise UserError(f"split {path}: {len(missing)} {part} ids not in this dataset (first: {missing[0]})")
        chosen = torch.tensor([where[sid] for sid in ids], dtype=torch.long).view(-1, 2)
        set_of, index = chosen[:, 0], chosen[:, 1]
        first = sets[0]
        images = torch.empty((len(ids), *first.images.shape[1:]), dtype=torch.uint8)
        labels = torch.empty(len(ids), dtype=torch.long)
        for s, data in enumerate(sets):  # gather per source set, vectorised
            mask = set_of == s
            images[mask] = data.images[index[mask]]
            labels[mask] = data.labels[index[mask]]
        out[part] = ImageSet(images, labels, source.classes, list(ids))
    return Split(out["train"], out["val"], out["test"])
