"""The fast data checks `train` and `study` run before training: one summary line, the duplicate groups a new split
keeps together, and the leakage of a split someone passed in (`cnnarena doctor` has the full report)."""

from __future__ import annotations

from dataclasses import dataclass

from .dataset import Source
from .duplicate_cache import cached_split_groups
from .duplicates import exact_pairs, near_search_applies
from .split import Split


@dataclass(frozen=True)
class Health:
    groups: list[list[int]]  # pool indices
    summary: str


def check(source: Source) -> Health:
    counts = [sum(column) for column in zip(*(s.class_counts() for s in source.official()), strict=True)]
    near_too = source.root is not None and near_search_applies(source.original_sizes)
    groups, exact, near = cached_split_groups(source.pool.images, near=near_too)
    ratio = max(counts) / min(counts) if min(counts) else float("inf")
    kept = sum(len(g) for g in groups)
    summary = (f"data: {sum(counts):,} images, {len(counts)} classes, imbalance {ratio:.1f}x, "
               f"{len(source.skipped)} unreadable, {exact} exact"
               + (f" and {near} near" if near_too else "")
               + " duplicate pair(s)" + (f" ({kept} images kept on one side of the split)" if groups else ""))
    return Health(groups, summary)


def leaked_pairs(split: Split) -> int:
    """Exact-duplicate pairs whose two images sit in different parts of `split`."""
    import torch

    parts = [split.train, split.val, split.test]
    images = torch.cat([p.images for p in parts])
    side = [k for k, p in enumerate(parts) for _ in range(len(p))]
    return sum(side[p.a] != side[p.b] for p in exact_pairs(images))
