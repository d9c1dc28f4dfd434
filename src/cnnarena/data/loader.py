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


def batch_count(n: int, batch_size: int, drop_last: bool, ranks: int = 1) -> int:
    """Batches per epoch; under several ranks a last batch smaller than the ranks is dropped (one rank would get
    none of it)."""
    if drop_last or (ranks > 1 and n % batch_size and n % batch_size < ranks):
        return n // batch_size
    return -(-n // batch_size)


def batch_bounds(b: int, n: int, batch_size: int, rank: int = 0, ranks: int = 1) -> tuple[int, int, int]:
    """(lo, hi, whole): this rank's contiguous part [lo, hi) of batch b, and the batch's size over all ranks
    (the ranks' parts differ in size by one at most)."""
    lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
    whole = hi - lo
    if ranks > 1:
        size, extra = divmod(whole, ranks)
        lo += rank * size + min(rank, extra)
        hi = lo + size + (1 if rank < extra else 0)
    return lo, hi, whole


class BatchLoader:
    """Iterates (images float [0,1] N×C×H×W, labels) over an ImageSet kept on `device`."""

    def __init__(self, data: ImageSet, batch_size: int, *, device: torch.device | str = "cpu",
                 shuffle: bool = False, drop_last: bool = False, augment: Augment | None = None,
                 seed: int = 0, channels_last: bool = False, balanced: bool = False,
                 shard: tuple[int, int] | None = None) -> None:
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last, self.balanced = batch_size, shuffle, drop_last, balanced
        self.augment = augment
        self.channels_last = channels_last
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        # shard (rank, ranks): every rank draws the same epoch order from the same seed and keeps its slice of
        # each batch (torchrun's data parallelism); augmentation then draws from a generator of the rank's own
        self.rank, self.ranks = shard if shard is not None and shard[1] > 1 else (0, 1)
        self.augment_generator = self.generator if self.ranks == 1 else torch.Generator(device="cpu")
        self.global_batch = 0  # the size of the batch last yielded, over all ranks

    def __len__(self) -> int:
        return batch_count(self.images.shape[0], self.batch_size, self.drop_last, self.ranks)

    @property
    def num_samples(self) -> int:
        return self.images.shape[0]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.images.shape[0]
        order = epoch_order(self.labels, self.generator, self.shuffle, self.balanced)
        if self.ranks > 1 and self.augment is not None:  # from the shared generator: a resume draws the same
            base = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            self.augment_generator.manual_seed(base + self.rank)
        for b in range(len(self)):
            lo, hi, self.global_batch = batch_bounds(b, n, self.batch_size, self.rank, self.ranks)
            if order is None:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            x = x.float().div_(255.0)
            if self.augment is not None:
                x = self.augment(x, self.augment_generator)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
