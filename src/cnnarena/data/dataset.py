"""The in-memory form every source is turned into: one uint8 tensor of images plus labels.

Small-image datasets fit in memory whole, so the hot path is just slicing tensors
(no DataLoader, no PIL, no per-sample Python).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class ImageSet:
    """A set of labelled images.

    images: uint8, shape N×C×H×W, C is 1 (grayscale) or 3 (RGB); every image has the same size.
    labels: int64, shape N, values in range(len(classes)).
    ids:    one stable string per sample (relative file path, or "train/123" for array datasets);
            split manifests are written in ids so another run can reuse the exact same split.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    ids: list[str]

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4, self.images.shape
        assert self.labels.shape == (n,) and len(self.ids) == n, (self.labels.shape, len(self.ids), n)
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.images.shape[2], self.images.shape[3]

    def subset(self, index: torch.Tensor | list[int]) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index], self.classes, [self.ids[i] for i in index.tolist()])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


@dataclass
class Source:
    """What a dataset source yields.

    pool: the samples a split is carved from (for datasets with an official test split, its train part).
    test: the official test split, when the dataset has one; then only validation is carved from pool.
    val: the official validation split, when the dataset has one beside `test`; then nothing is carved.
    skipped: (path, reason) for files that could not be read (reported, not fatal unless --strict).
    original_sizes: (height, width) of each pool+test image before resizing, for `inspect` statistics.
    root: the folder the ids of a file source are relative to (None for array datasets).
    """

    name: str
    pool: ImageSet
    test: ImageSet | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    original_sizes: list[tuple[int, int]] | None = None
    root: Path | None = None  # where the files of a folder/CSV source are (their ids are relative to it)
    val: ImageSet | None = None  # an official validation split (a Hugging Face dataset's); only beside `test`
    excluded: frozenset[str] = frozenset()  # ids a curation file left out (a split naming them still loads)
    curation: dict | None = None  # the curation applied (curation.summary: file, sha256, counts), as read once

    def official(self) -> list[ImageSet]:
        """The sets a split's ids are drawn from: pool, then the official test and validation splits."""
        return [s for s in (self.pool, self.test, self.val) if s is not None]

    @property
    def classes(self) -> list[str]:
        return self.pool.classes
