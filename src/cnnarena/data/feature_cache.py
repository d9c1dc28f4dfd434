"""Arrays the doctor computes from a decoded dataset, kept beside its images: a pretrained backbone's features
(about 6 ms an image on 2 cores) and the label issues' out-of-sample probabilities (k models fitted). A second
`doctor` on the same data reads them instead.

Keyed, like the duplicate groups, by a hash of the inputs themselves (the pixels, the labels, the features) and of
what computed them (backbone and resolution; folds and seed), so any change to the files, their decoding or the
labels computes them afresh.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write
from .cache import image_cache_dir

VERSION = 2


def cached_features(images: torch.Tensor, name: str, compute: Callable[[torch.Tensor], np.ndarray],
                    cache_dir: Path | None = None) -> np.ndarray:
    """compute(images), or what it gave for these very pixels before."""
    return cached_array("features", [name], [images], lambda: compute(images), cache_dir)


def cached_array(kind: str, settings: list, inputs: list, compute: Callable[[], np.ndarray],
                 cache_dir: Path | None = None) -> np.ndarray:
    """compute(), or the 2-D array it gave before for the same inputs (tensors or arrays) and settings."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([VERSION, kind, *settings]).encode())
    for array in inputs:
        if array is None:
            digest.update(b"none")
            continue
        values = array.contiguous().numpy() if isinstance(array, torch.Tensor) else np.ascontiguousarray(array)
        digest.update(json.dumps([list(values.shape), str(values.dtype)]).encode())
        digest.update(memoryview(values).cast("B"))
    path = image_cache_dir(cache_dir) / kind / f"{digest.hexdigest()}.npy"
    rows = len(inputs[0]) if inputs and inputs[0] is not None else None
    try:
        saved = np.load(path, allow_pickle=False)
        if saved.ndim == 2 and saved.shape[0] == rows and np.isfinite(saved).all():
            return saved
    except (OSError, ValueError):
        pass  # not computed yet, or an unreadable entry: compute again and replace it
    result = compute()
    _write(path, result)
    return result


def _write(path: Path, features: np.ndarray) -> None:
    """Whole or not at all; a read-only cache costs a computation next time."""
    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would add .npy to a bare name
            np.save(f, features, allow_pickle=False)

    try:
        atomic_write(path, save)
    except OSError:
        pass
