"""The race's data, made once: Fashion-MNIST as arrays (.npz) and as class folders of PNGs (train/, test/).

Array tools (the plain script, Keras) load the .npz; folder tools (fastai, Ultralytics) read the PNGs as their
users' own photo folders would be read. Both hold the same images: Debian's dataset-fashion-mnist files, the
official 60,000 training and 10,000 test images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnarena.data.idx import FASHION_CLASSES, find_fashion_dir, read_idx


@dataclass(frozen=True)
class RaceData:
    npz: Path
    folder: Path


def _arrays(directory: Path) -> dict[str, np.ndarray]:
    out = {}
    for prefix, split in (("train", "train"), ("t10k", "test")):
        out[f"x_{split}"] = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")
        out[f"y_{split}"] = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return out


def _write_folders(arrays: dict[str, np.ndarray], folder: Path, log) -> None:
    from PIL import Image

    for split in ("train", "test"):
        log(f"writing {len(arrays[f'y_{split}']):,} {split} PNGs under {folder}")
        for name in FASHION_CLASSES:
            (folder / split / name.replace("/", "-")).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(arrays[f"x_{split}"], arrays[f"y_{split}"], strict=True)):
            cls = FASHION_CLASSES[int(label)].replace("/", "-")
            Image.fromarray(image).save(folder / split / cls / f"{i:05d}.png")
    (folder / ".complete").write_text("ok\n")


def ensure_data(root: Path, log=lambda m: None) -> RaceData:
    directory = find_fashion_dir(None)
    if directory is None:
        raise SystemExit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    root.mkdir(parents=True, exist_ok=True)
    data = RaceData(root / "fashion-mnist.npz", root / "fashion-mnist")
    arrays = None
    if not data.npz.exists():
        arrays = _arrays(directory)
        np.savez(data.npz, **arrays)
    if not (data.folder / ".complete").exists():
        _write_folders(arrays or _arrays(directory), data.folder, log)
    return data
