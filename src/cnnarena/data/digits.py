"""scikit-learn's bundled 8×8 handwritten digits: always offline, the default for tests."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from .dataset import ImageSet, Source


def load_digits_source() -> Source:
    images, target = _digits_arrays()
    # Pixel values are 0..16; scale to the uint8 range every other source uses.
    pixels = torch.from_numpy((images * (255.0 / 16.0)).round().astype("uint8")).unsqueeze(1)
    labels = torch.from_numpy(target).long()
    ids = [f"digits/{i}" for i in range(len(labels))]
    pool = ImageSet(pixels, labels, [str(c) for c in range(10)], ids)
    return Source("digits", pool, None, [], [(8, 8)] * len(labels))


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(1797×8×8 float images, int targets): read from scikit-learn's own data file, as its load_digits reads it,
    without importing scikit-learn (about 2 s); through load_digits where the file is not where it was."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = Path(folders[0], "datasets", "data", "digits.csv.gz") if folders else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
