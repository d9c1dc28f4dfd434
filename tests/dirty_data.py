"""A messy photo folder built from real images, with every problem injected at a known place (doctor's tests).

Each "photo" is a 2x2 mosaic of four real images of one class (scikit-learn's digits or Fashion-MNIST), upscaled
to photo size and saved as PNG, so that photos of one class differ the way photos do. Injected, and returned:
exact copies (same file in its own class, and in another class: a label conflict), near-duplicates (re-encoded as
JPEG at quality 30, resized, cropped by a few pixels, brightened) and photos filed under a wrong class.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

NEAR_KINDS = ("jpeg", "resize", "crop", "recolor")


@dataclass
class DirtyFolder:
    root: Path
    classes: list[str]
    exact: list[tuple[str, str]] = field(default_factory=list)  # (original id, copy id)
    near: list[tuple[str, str, str]] = field(default_factory=list)  # (original id, copy id, kind)
    flipped: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (true class, class filed under)


def real_images(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 N×H×W images, labels, class names) of a real dataset."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.images * (255 / 16)).round().astype(np.uint8), d.target, [str(c) for c in range(10)]
    from cnnarena.data.sources import load_source

    source = load_source(name)
    return source.pool.images[:, 0].numpy(), source.pool.labels.numpy(), list(source.classes)


def mosaic(tiles: np.ndarray, side: int) -> Image.Image:
    top = np.concatenate([tiles[0], tiles[1]], 1)
    bottom = np.concatenate([tiles[2], tiles[3]], 1)
    return Image.fromarray(np.concatenate([top, bottom], 0)).resize((side, side), Image.BICUBIC)


def near_copy(photo: Image.Image, kind: str) -> Image.Image:
    w, h = photo.size
    if kind == "jpeg":
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=30)
        return Image.open(io.BytesIO(buffer.getvalue())).convert(photo.mode)
    if kind == "resize":
        return photo.resize((int(w * 0.7), int(h * 0.7)), Image.BILINEAR)
    if kind == "crop":
        return photo.crop((3, 3, w - 3, h - 3))
    if kind == "recolor":
        return ImageEnhance.Brightness(photo).enhance(1.2)
    raise ValueError(kind)


def build(root: Path, dataset: str = "fashion-mnist", *, per_class: int = 30, exact: int = 20, near: int = 40,
          flipped: int = 20, side: int = 112, seed: int = 0) -> DirtyFolder:
    images, labels, classes = real_images(dataset)
    rng = np.random.default_rng(seed)
    folder = DirtyFolder(root, classes)
    photos: dict[str, tuple[Image.Image, int]] = {}
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        pool = rng.permutation(np.flatnonzero(labels == c))
        for k in range(per_class):
            photo = mosaic(images[pool[4 * k:4 * k + 4]], side)
            photo_id = f"{name}/p{k:03d}.png"
            photo.save(root / photo_id)
            photos[photo_id] = (photo, c)
    ids = sorted(photos)
    chosen = rng.permutation(len(ids))
    originals = [ids[i] for i in chosen[:exact + near + flipped]]
    for k, original in enumerate(originals[:exact]):  # every other copy goes into another class
        _, c = photos[original]
        target = classes[c] if k % 2 == 0 else classes[(c + 1 + k % (len(classes) - 1)) % len(classes)]
        copy_id = f"{target}/copy{k:03d}.png"
        shutil.copyfile(root / original, root / copy_id)
        folder.exact.append((original, copy_id))
    for k, original in enumerate(originals[exact:exact + near]):
        photo, c = photos[original]
        kind = NEAR_KINDS[k % len(NEAR_KINDS)]
        copy_id = f"{classes[c]}/near{k:03d}.{'jpg' if kind == 'jpeg' else 'png'}"
        near_copy(photo, kind).save(root / copy_id, **({"quality": 30} if kind == "jpeg" else {}))
        folder.near.append((original, copy_id, kind))
    for k, original in enumerate(originals[exact + near:]):
        _, c = photos[original]
        wrong = classes[(c + 1 + k % (len(classes) - 1)) % len(classes)]
        moved = f"{wrong}/moved{k:03d}.png"
        (root / original).rename(root / moved)
        folder.flipped[moved] = (classes[c], wrong)
    return folder
