"""A loader over precomputed backbone features, for training a head while the backbone is frozen.

A frozen backbone gives the same features every epoch, so computing them once turns each
phase-1 epoch from a full network pass into a few matrix multiplies.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class FeatureLoader:
    """Same interface as data.loader.BatchLoader, over an N×F float tensor."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, *, device: torch.device,
                 shuffle: bool = False, seed: int = 0) -> None:
        self.device = torch.device(device)
        self.features, self.labels = features.to(self.device), labels.to(self.device)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.features.shape[0] // self.batch_size)

    @property
    def num_samples(self) -> int:
        return self.features.shape[0]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.features.shape[0]
        order = torch.randperm(n, generator=self.generator).to(self.device) if self.shuffle else torch.arange(n)
        for lo in range(0, n, self.batch_size):
            idx = order[lo:lo + self.batch_size]
            yield self.features[idx], self.labels[idx]
