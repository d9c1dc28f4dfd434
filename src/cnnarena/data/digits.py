"""scikit-learn's bundled 8×8 handwritten digits: always offline, the default for tests."""

from __future__ import annotations

import torch

from .dataset import ImageSet, Source


def load_digits_source() -> Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; scale to the uint8 range every other source uses.
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype("uint8")).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    ids = [f"digits/{i}" for i in range(len(labels))]
    pool = ImageSet(images, labels, [str(c) for c in bunch.target_names], ids)
    return Source("digits", pool, None, [], [(8, 8)] * len(labels))
