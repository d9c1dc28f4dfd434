"""Fashion-MNIST from its idx files (gzip or not), found locally or downloaded once and md5-checked."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .cache import download, user_cache_dir
from .dataset import ImageSet, Source

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# Published checksums of the official .gz files (the Debian package recompresses, so only downloads are checked).
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
HOW_TO_GET = ("install it with `apt-get install dataset-fashion-mnist`, or pass --data-dir pointing at a folder "
              "holding the four idx files (train-images-idx3-ubyte.gz, ...)")

# idx type byte → big-endian numpy dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """One idx file as an array; UserError when it is not a well-formed idx file."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by name
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path} is corrupt ({e}): delete it and get it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise UserError(f"{path} is not an idx file (bad magic number {raw[:4].hex()}): delete it and get it again")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4)) if len(raw) >= header else ()
    if len(raw) < header or len(raw) != header + int(np.prod(shape)) * dtype.itemsize:
        raise UserError(f"{path} is corrupt (size {len(raw)} bytes does not match its header): "
                        "delete it and get it again")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def find_fashion_dir(data_dir: Path | None) -> Path | None:
    """The first folder holding all four files: $CNNARENA_DATA, the Debian package, the user cache; or, when the
    user names a data_dir, that folder (or its fashion-mnist/ subfolder) and no other."""
    if data_dir is not None:
        found = next((d for d in (Path(data_dir), Path(data_dir) / "fashion-mnist")
                      if all(_file(d, name) for name in FASHION_FILES)), None)
        if found is None:
            raise UserError(f"--data-dir {data_dir} holds no Fashion-MNIST: it needs "
                            f"{', '.join(FASHION_FILES)} (or the same without .gz)")
        return found
    roots = [Path(d) for d in (os.environ.get("CNNARENA_DATA"),) if d]
    candidates = [p for root in roots for p in (root, root / "fashion-mnist")]
    candidates += [SYSTEM_DIR, user_cache_dir() / "fashion-mnist"]
    return next((d for d in candidates if all(_file(d, name) for name in FASHION_FILES)), None)


def _file(directory: Path, name: str) -> Path | None:
    """name, or its uncompressed form."""
    return next((p for p in (directory / name, directory / name.removesuffix(".gz")) if p.is_file()), None)


def load_fashion_mnist(data_dir: Path | None = None, download_ok: bool = True) -> Source:
    directory = find_fashion_dir(data_dir)
    if directory is None:
        if not download_ok:
            raise UserError(f"Fashion-MNIST not found: {HOW_TO_GET}")
        directory = user_cache_dir() / "fashion-mnist"
        for name, md5 in FASHION_FILES.items():
            if _file(directory, name) is None:
                download(FASHION_URL + name, directory / name, md5, HOW_TO_GET)
    train = _split(directory, "train", "train")
    test = _split(directory, "t10k", "test")
    return Source("fashion-mnist", train, test, [], [train.size] * (len(train) + len(test)))


def _split(directory: Path, prefix: str, id_prefix: str) -> ImageSet:
    images_path = _file(directory, f"{prefix}-images-idx3-ubyte.gz")
    labels_path = _file(directory, f"{prefix}-labels-idx1-ubyte.gz")
    assert images_path is not None and labels_path is not None, directory
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{images_path} and {labels_path} do not hold matching uint8 images and labels "
                        f"(shapes {images.shape} and {labels.shape})")
    if len(labels) and labels.max() >= len(FASHION_CLASSES):
        raise UserError(f"{labels_path} has label {labels.max()}; Fashion-MNIST labels are 0..9")
    ids = [f"{id_prefix}/{i}" for i in range(len(labels))]
    # frombuffer arrays are read-only; copy once so torch owns writable memory.
    return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                    list(FASHION_CLASSES), ids)
