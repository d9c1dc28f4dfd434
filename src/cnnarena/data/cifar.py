"""CIFAR-10 in its python-pickle form (cifar-10-batches-py), unpickled safely.

The batches are pickles, and a pickle can run any code it names. The unpickler here resolves
only what real CIFAR batches reference (numpy array reconstruction), so a planted file fails
with a clear error instead of running.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .cache import download, user_cache_dir
from .dataset import ImageSet, Source

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCHES_DIR = "cifar-10-batches-py"
HOW_TO_GET = (f"download {CIFAR_URL}, extract it and pass --data-dir pointing at the folder holding {BATCHES_DIR}")

# The function numpy arrays pickle through; taken from numpy itself because its module moved
# (numpy.core → numpy._core) while files written by either name must load.
_reconstruct = np.empty(0).__reduce__()[0]
_frombuffer = np.empty(0).__reduce_ex__(5)[0]
def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles written by Python 3 call to rebuild bytes (_codecs.encode(text, 'latin1')), and only
    that: another codec is refused."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Forbidden(f"it calls _codecs.encode with the codec {str(encoding)[:20]!r}")
    return text.encode("latin1")


_ALLOWED = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5's way to rebuild an array
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _Forbidden(pickle.UnpicklingError):
    pass


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Forbidden(f"it references {module}.{name}") from None


def unpickle(path: Path) -> dict:
    """A CIFAR batch file: a dict with bytes keys (the files were written by Python 2)."""
    try:
        with path.open("rb") as f:
            data = _SafeUnpickler(f, encoding="bytes").load()
    except _Forbidden as e:
        raise UserError(f"refusing to load {path}: {e}, which a CIFAR batch never does "
                        "(the file may be malicious)") from None
    except Exception as e:  # parsing an untrusted file: any failure means it is damaged
        reason = " ".join(str(e).split())[:200]
        raise UserError(f"{path} is not a readable CIFAR batch ({type(e).__name__}: {reason}): get it again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a CIFAR batch (it holds a {type(data).__name__}, not a dict)")
    return data


def find_cifar_dir(path: Path) -> Path | None:
    """path itself or its cifar-10-batches-py subfolder, whichever holds data_batch_1."""
    return next((d for d in (path, path / BATCHES_DIR) if (d / "data_batch_1").is_file()), None)


def read_cifar_dir(directory: Path) -> Source:
    meta_path = directory / "batches.meta"
    if not meta_path.is_file():
        raise UserError(f"{directory} has data_batch_1 but no batches.meta (the class names): get it again")
    meta = unpickle(meta_path)
    if not isinstance(meta.get(b"label_names"), list):
        raise UserError(f"{meta_path} has no label_names list")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]
    train_files = sorted((p for p in directory.iterdir() if re.fullmatch(r"data_batch_\d+", p.name)),
                         key=lambda p: int(p.name.rsplit("_", 1)[1]))
    pool = _read_batches(train_files, classes, "train")
    test_path = directory / "test_batch"
    test = _read_batches([test_path], classes, "test") if test_path.is_file() else None
    n = len(pool) + (len(test) if test is not None else 0)
    return Source("cifar10", pool, test, [], [(32, 32)] * n)


def _read_batches(paths: list[Path], classes: list[str], id_prefix: str) -> ImageSet:
    images, labels = [], []
    for path in paths:
        batch = unpickle(path)
        try:
            data, batch_labels = batch.get(b"data"), np.asarray(batch.get(b"labels", []), dtype=np.int64)
        except (TypeError, ValueError, OverflowError, AttributeError):  # text labels, nested lists, not a dict
            raise UserError(f"{path} is not a CIFAR batch: its labels must be whole numbers") from None
        if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
                or data.shape[1] != 3 * 32 * 32 or batch_labels.shape != (len(data),)):
            raise UserError(f"{path} is not a CIFAR batch (expected uint8 data N×3072 and N labels)")
        if len(batch_labels) and not 0 <= batch_labels.min() <= batch_labels.max() < len(classes):
            raise UserError(f"{path} has labels outside 0..{len(classes) - 1}")
        images.append(data)
        labels.append(batch_labels)
    # Each row is 1024 red, 1024 green, 1024 blue values, row-major: already C×H×W.
    pixels = np.concatenate(images).reshape(-1, 3, 32, 32)
    all_labels = np.concatenate(labels)
    ids = [f"{id_prefix}/{i}" for i in range(len(all_labels))]
    return ImageSet(torch.from_numpy(pixels), torch.from_numpy(all_labels), list(classes), ids)


def load_cifar10(data_dir: Path | None = None, download_ok: bool = True) -> Source:
    """From data_dir, $CNNARENA_DATA or the user cache; else downloaded into the user cache."""
    roots = [Path(d) for d in (data_dir, os.environ.get("CNNARENA_DATA")) if d] + [user_cache_dir()]
    directory = next((d for d in map(find_cifar_dir, roots) if d is not None), None)
    if directory is None:
        if not download_ok:
            raise UserError(f"CIFAR-10 not found: {HOW_TO_GET}")
        directory = _download_cifar10(user_cache_dir())
    return read_cifar_dir(directory)


def _download_cifar10(cache: Path) -> Path:
    archive = cache / "cifar-10-python.tar.gz"
    download(CIFAR_URL, archive, CIFAR_MD5, HOW_TO_GET)
    staging = cache / f".cifar-10-extract.{os.getpid()}"
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")  # "data": no absolute paths, links out or devices
        os.replace(staging / BATCHES_DIR, cache / BATCHES_DIR)
    except (OSError, tarfile.TarError) as e:
        raise UserError(f"could not extract {archive} ({e}): delete it and try again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    archive.unlink()
    return cache / BATCHES_DIR
