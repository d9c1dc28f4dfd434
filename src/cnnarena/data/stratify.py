"""scikit-learn's stratified `train_test_split`, reproduced index for index, without importing scikit-learn.

Importing scikit-learn costs about 2 s (scipy.stats comes with it), more than the rest of a small run's start-up
after torch; every split cnnarena makes goes through here, so the split files of earlier runs and the published
figures stay what they were. tests/test_same_as_scikit_learn.py checks it against scikit-learn itself on many label
sets.
"""

from __future__ import annotations

import math

import numpy as np


def stratified_train_test_split(index: np.ndarray, labels: np.ndarray, test_size: float,
                                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, cut) as `sklearn.model_selection.train_test_split(index, test_size=test_size, random_state=seed,
    stratify=labels)` returns them; ValueError where scikit-learn raises one (a class too small to split)."""
    n = len(labels)
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    if n_train <= 0:
        raise ValueError(f"with n_samples={n} and test_size={test_size}, the training set would be empty")
    classes, class_of, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError("The least populated classes in y have only 1 member, which is too few. Classes with too "
                         f"few members are: {classes[counts < 2].tolist()}")
    if n_train < len(classes) or n_test < len(classes):
        raise ValueError(f"train ({n_train}) and test ({n_test}) sizes must each be at least the number of classes "
                         f"({len(classes)})")
    members = np.split(np.argsort(class_of.ravel(), kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    train_counts = _approximate_mode(counts, n_train, rng)
    test_counts = _approximate_mode(counts - train_counts, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for k in range(len(classes)):
        shuffled = members[k].take(rng.permutation(counts[k]), mode="clip")
        train.extend(shuffled[:train_counts[k]])
        test.extend(shuffled[train_counts[k]:train_counts[k] + test_counts[k]])
    return index[rng.permutation(train)], index[rng.permutation(test)]


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of `draws` come from each class (sklearn.utils.extmath._approximate_mode): the floored
    proportional share, the rest given by largest remainder, ties broken at random."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            now = min(len(tied), need)
            floored[rng.choice(tied, size=now, replace=False)] += 1
            need -= now
            if need == 0:
                break
    return floored.astype(int)
