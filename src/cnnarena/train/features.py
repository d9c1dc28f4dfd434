"""A loader over precomputed activations, for training what follows a frozen part of a network.

A frozen backbone gives the same features every epoch, so computing them once turns each phase-1
epoch from a full network pass into a few matrix multiplies. The same holds in phase 2 for the frozen
trunk in front of the last K unfrozen stages: its output is cached and only the tail is run.

The loader hands out the same batches in the same order as the BatchLoader it mirrors - it draws
its shuffles from that loader's generator - so the cached path and the slow path train on identical
batch sequences and leave the generator in the same state for the epochs that follow.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..data.loader import BatchLoader, batch_bounds, batch_count, epoch_order


class FeatureLoader:
    """Same interface (and batch order) as data.loader.BatchLoader, over an N×... float tensor."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 device: torch.device | str, shuffle: bool = False, seed: int = 0,
                 generator: torch.Generator | None = None, drop_last: bool = False,
                 channels_last: bool = False, balanced: bool = False, shard: tuple[int, int] = (0, 1)) -> None:
        if features.shape[0] != labels.shape[0]:
            raise ValueError(f"{features.shape[0]} feature rows for {labels.shape[0]} labels")
        self.device = torch.device(device)
        self.features, self.labels = features.to(self.device), labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last, self.balanced = batch_size, shuffle, drop_last, balanced
        self.channels_last = channels_last and features.dim() == 4
        self.generator = generator if generator is not None else torch.Generator(device="cpu").manual_seed(seed)
        self.rank, self.ranks = shard
        self.global_batch = 0

    @classmethod
    def mirroring(cls, loader: BatchLoader, features: torch.Tensor, channels_last: bool = False) -> FeatureLoader:
        """Features of `loader`'s images (same row order), batched exactly as `loader` batches its images."""
        return cls(features, loader.labels, loader.batch_size, device=loader.device, shuffle=loader.shuffle,
                   generator=loader.generator, drop_last=loader.drop_last, channels_last=channels_last,
                   balanced=loader.balanced, shard=(getattr(loader, "rank", 0), getattr(loader, "ranks", 1)))

    def __len__(self) -> int:
        return batch_count(self.features.shape[0], self.batch_size, self.drop_last, self.ranks)

    @property
    def num_samples(self) -> int:
        return self.features.shape[0]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.features.shape[0]
        order = epoch_order(self.labels, self.generator, self.shuffle, self.balanced)  # the same draw as BatchLoader
        for b in range(len(self)):
            lo, hi, self.global_batch = batch_bounds(b, n, self.batch_size, self.rank, self.ranks)
            if order is None:
                x, y = self.features[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self.features.index_select(0, idx), self.labels.index_select(0, idx)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
