"""Batches sliced from one in-memory uint8 tensor that already sits on the training device.

No DataLoader workers, no per-sample Python: a batch is one index_select, one float conversion
and the (batched) augmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .dataset import ImageSet

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def epoch_order(labels: torch.Tensor, generator: torch.Generator, shuffle: bool,
                balanced: bool = False) -> torch.Tensor | None:
    """The sample order of one epoch (None: as stored). shuffle: one randperm from the loader's generator.
    balanced: as many draws as samples, with replacement, each class equally likely (inverse-frequency weights)."""
    if balanced:
        counts = torch.bincount(labels.cpu())
        weights = (1.0 / counts.clamp(min=1).double())[labels.cpu()]
        return torch.multinomial(weights, labels.numel(), replacement=True, generator=generator).to(labels.device)
    if shuffle:
        return torch.randperm(labels.numel(), generator=generator).to(labels.device)
    return None


class BatchLoader:
    """Iterates (images float [0,1] N×C×H×W, labels) over an ImageSet kept on `device`."""

    def __init__(self, data: ImageSet, batch_size: int, *, device: torch.device | str = "cpu",
                 shuffle: bool = False, drop_last: bool = False, augment: Augment | None = None,
                 seed: int = 0, channels_last: bool = False, balanced: bool = False) -> None:
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last, self.balanced = batch_size, shuffle, drop_last, balanced
        self.augment = augment
        self.channels_last = channels_last
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return self.images.shape[0]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.images.shape[0]
        order = epoch_order(self.labels, self.generator, self.shuffle, self.balanced)
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min(n, (b + 1) * self.batch_size)
            if order is None:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            x = x.float().div_(255.0)
            if self.augment is not None:
                x = self.augment(x, self.generator)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
