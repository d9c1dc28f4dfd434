"""Near-duplicates that are copies, and look-alikes that are not: recall and precision of the doctor's search.

  python -m benchmarks.near_duplicates            # three generated folders; figures to results/near_duplicates.json

Three folders of files, as a user's would be, each searched as `cnnarena doctor` searches it (decoded at the
default 64 px through the image cache, then `duplicates.near_pairs`):
- digits: scikit-learn's real handwritten digits, upscaled to 32 px PNGs (different people's handwriting of a digit
  are look-alikes);
- fashion: real Fashion-MNIST images of three classes, upscaled to 96 px JPEGs;
- drawings: one shape per class (disc, square, triangle) on white, drawn at a varied position, size and colour,
  96 px PNGs.

In each, a tenth of the images gets a copy made as copies are in the wild, each with all of: JPEG quality 30-95, a
resize of +-10%, a crop of up to 10% of each side, and brightness +-20% (seeded). Recall is the share of copies whose
pair is found; a look-alike pair is any reported pair that is not an image and its copy; the figures are the share
of look-alike pairs among all pairs of distinct originals of one class, and the share of originals named in one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from benchmarks import machine

RESULTS = Path(__file__).resolve().parent / "results" / "near_duplicates.json"


def digits(count: int, rng) -> tuple[list[Image.Image], list[int]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    pick = rng.permutation(len(d.target))[:count]
    images = [Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32), Image.BICUBIC)
              for i in pick]
    return images, [int(d.target[i]) for i in pick]


def fashion(count: int, rng) -> tuple[list[Image.Image], list[int]]:
    from cnnarena.data.sources import load_source

    pool = load_source("fashion-mnist").pool
    labels = pool.labels.numpy()
    pick = rng.permutation(np.flatnonzero(np.isin(labels, (0, 3, 7))))[:count]  # T-shirts, dresses, sneakers
    images = [Image.fromarray(pool.images[i, 0].numpy()).resize((96, 96), Image.BICUBIC).convert("RGB")
              for i in pick]
    return images, [int(labels[i]) for i in pick]


def drawings(count: int, rng) -> tuple[list[Image.Image], list[int]]:
    images, labels = [], []
    for k in range(count):
        shape = k % 3
        image = Image.new("RGB", (96, 96), "white")
        draw = ImageDraw.Draw(image)
        r = int(rng.integers(14, 30))
        cx, cy = (int(v) for v in rng.integers(r + 4, 96 - r - 4, 2))
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        if shape == 0:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif shape == 1:
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        images.append(image)
        labels.append(shape)
    return images, labels


def copy_of(image: Image.Image, rng) -> Image.Image:
    """JPEG quality 30-95, resized by +-10%, cropped by up to 10% of each side, brightness +-20%: all at once."""
    w, h = image.size
    left, top, right, bottom = (int(rng.uniform(0, 0.1) * s) for s in (w, h, w, h))
    image = image.crop((left, top, w - right, h - bottom))
    scale = rng.uniform(0.9, 1.1)
    image = image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))), Image.BILINEAR)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=int(rng.integers(30, 96)))
    copy = Image.open(io.BytesIO(buffer.getvalue()))
    return copy.convert(image.mode) if image.mode == "L" else copy


def write_folder(root: Path, images, labels, rng, copy_share: float = 0.1) -> set[tuple[str, str]]:
    """The originals and their copies as class folders; the (original, copy) id pairs."""
    copies = set()
    chosen = set(rng.permutation(len(images))[:max(1, int(len(images) * copy_share))].tolist())
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{k:05d}.png")
        if k in chosen:
            copy_of(image, rng).save(folder / f"{k:05d}-copy.jpg")
            copies.add((f"class{label}/{k:05d}.png", f"class{label}/{k:05d}-copy.jpg"))
    return copies


def measure(root: Path, copies: set[tuple[str, str]], threshold: float | None) -> dict:
    from cnnarena.data import duplicates
    from cnnarena.data.sources import load_source

    source = load_source(str(root))
    ids = source.pool.ids
    exact = duplicates.exact_pairs(source.pool.images)
    t0 = time.perf_counter()
    kwargs = {} if threshold is None else {"threshold": threshold}
    found, _ = duplicates.near_pairs(source.pool.images, {(p.a, p.b) for p in exact}, **kwargs)
    seconds = time.perf_counter() - t0
    named = {frozenset((ids[p.a], ids[p.b])) for p in [*exact, *found]}
    truth = {frozenset(c) for c in copies}
    false = named - truth
    originals = [i for i in ids if not i.endswith("-copy.jpg")]
    labels = [i.split("/")[0] for i in originals]
    same_class_pairs = sum(n * (n - 1) // 2 for n in np.unique(labels, return_counts=True)[1])
    named_originals = {i for pair in false for i in pair if not i.endswith("-copy.jpg")}
    return {"images": len(ids), "copies": len(truth), "found": len(truth & named),
            "recall": round(len(truth & named) / max(1, len(truth)), 4), "false_pairs": len(false),
            "same_class_pairs": int(same_class_pairs),
            "false_pair_share": round(len(false) / max(1, same_class_pairs), 6),
            "originals_named_falsely": round(len(named_originals) / max(1, len(originals)), 4),
            "search_seconds": round(seconds, 2), "examples_of_false_pairs": sorted(map(sorted, false))[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600, help="originals per folder")
    parser.add_argument("--threshold", type=float, default=None, help="the confirmation threshold (default: its own)")
    parser.add_argument("--label", default="current")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("CNNARENA_CACHE", str(Path(tmp) / "cache"))
        for name, make in (("digits", digits), ("fashion", fashion), ("drawings", drawings)):
            rng = np.random.default_rng(args.seed)
            images, labels = make(args.images, rng)
            copies = write_folder(Path(tmp) / name, images, labels, rng)
            results[name] = measure(Path(tmp) / name, copies, args.threshold)
            print(name, {k: v for k, v in results[name].items() if k != "examples_of_false_pairs"}, flush=True)
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[args.label] = {"folders": results, "threshold": args.threshold, "images_per_folder": args.images,
                         "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
