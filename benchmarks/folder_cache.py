"""A class-folder dataset of JPEGs: decoded once, then never again (issue 5's folder fast path).

    python benchmarks/folder_cache.py [--images 6000] [--size 64] [--epochs 3]

Generates `--images` JPEG photos-alike (most 524×524 like RealWaste, the rest of mixed sizes and
aspect ratios like Animals-10) in class-per-subfolder layout, then measures, in a fresh image cache:
1. loading the folder cold: list, decode in parallel processes, resize to `--size`, write the
   uint8 memory-mapped cache;
2. loading it again warm (the cache key matches: no JPEG is opened);
3. a real `cnnarena train` run on it (simple-2conv): its first epoch (= cold load + epoch 1, what a
   user waits for before the first epoch ends) and each later epoch;
4. for scale, what the reports' pipeline pays on every epoch: torchvision ImageFolder + DataLoader
   (2 workers) decoding and resizing every JPEG, one pass, no model.
Results are printed and written to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

CLASSES = ["cardboard", "food organics", "glass", "metal", "paper", "plastic"]


def _write_class(args: tuple[Path, int, int, int]) -> int:
    """JPEGs of one class: a smooth random field tinted by the class, with a class-specific shape."""
    from PIL import Image, ImageDraw

    folder, label, count, seed = args
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tint = np.array([(label * 53) % 256, (label * 97) % 256, (label * 151) % 256], np.float32)
    for i in range(count):
        w, h = (524, 524) if i % 5 else (int(rng.integers(200, 900)), int(rng.integers(200, 900)))
        small = rng.random((8, 8, 3)).astype(np.float32) * 255
        base = Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.BILINEAR)
        pixels = 0.6 * np.asarray(base, np.float32) + 0.4 * tint
        img = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        x, y, r = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2)), min(w, h) // (3 + label % 3)
        box = (x, y, x + r, y + r)
        (draw.ellipse if label % 2 else draw.rectangle)(box, fill=tuple(int(v) for v in 255 - tint))
        img.save(folder / f"{label}_{i:05d}.jpg", quality=90)
    return count


def generate(root: Path, images: int) -> float:
    t0 = time.perf_counter()
    per_class = images // len(CLASSES)
    jobs = [(root / name, label, per_class, label) for label, name in enumerate(CLASSES)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_write_class, jobs))
    return time.perf_counter() - t0


def dataloader_epoch(root: Path, size: int) -> float:
    """One pass of the per-sample pipeline the reports used: decode + resize every JPEG, every epoch."""
    import torch
    from torchvision import datasets, transforms

    ds = datasets.ImageFolder(str(root), transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()]))
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2)
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=6000)
    p.add_argument("--size", type=int, default=64, help="training resolution the cache stores")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/folder_cache.json"))
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="cnnarena-folder-") as tmp:
        root, cache = Path(tmp) / "realwaste-like", Path(tmp) / "cache"
        os.environ["CNNARENA_CACHE"] = str(cache)  # a fresh cache: the first load really decodes
        gen_s = generate(root, args.images)
        n = sum(1 for _ in root.rglob("*.jpg"))
        megabytes = sum(f.stat().st_size for f in root.rglob("*.jpg")) / 2**20
        print(f"generated {n} JPEGs ({megabytes:.0f} MB) in {gen_s:.1f}s", flush=True)

        from cnnarena.config import build_config
        from cnnarena.data.sources import _cached_source, load_source
        from cnnarena.run import train_run

        t0 = time.perf_counter()
        load_source(str(root), image_size=args.size)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_source(str(root), image_size=args.size)
        warm = time.perf_counter() - t0
        print(f"cold load (decode + cache) {cold:.1f}s, warm load {warm:.2f}s", flush=True)

        # the training run starts from a cold cache again, as a user's first run would
        for entry in cache.iterdir():
            entry.unlink()
        _cached_source.cache_clear()
        cfg = build_config(None, {"data": str(root), "image_size": args.size, "model": "simple-2conv",
                                  "epochs": args.epochs, "batch_size": 64})
        t0 = time.perf_counter()
        metrics = train_run(cfg, Path(tmp) / "run")
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "history.jsonl").read_text().splitlines()]
        epoch_s = [r["epoch_seconds"] for r in rows]
        first = metrics["data_seconds"] + epoch_s[0]
        per_sample = dataloader_epoch(root, args.size)

    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "images": n, "megabytes": round(megabytes, 1), "size": args.size,
        "cold_load_seconds": round(cold, 2), "warm_load_seconds": round(warm, 3),
        "run": {"data_seconds": metrics["data_seconds"], "epoch_seconds": epoch_s,
                "first_epoch_seconds_including_load": round(first, 2), "wall_seconds": round(wall, 1),
                "test_accuracy": metrics["test_accuracy"], "train_images": metrics.get("train_samples")},
        "dataloader_decode_epoch_seconds": round(per_sample, 2),
    }
    print(f"\n{n} JPEGs -> {args.size}px cache")
    print(f"  cold load (parallel decode + memmap cache)   {cold:8.2f} s")
    print(f"  warm load (cache hit, no JPEG opened)        {warm:8.3f} s   ({cold / max(warm, 1e-9):,.0f}x)")
    print(f"  cnnarena train: first epoch incl. load       {first:8.2f} s")
    for i, s in enumerate(epoch_s[1:], start=2):
        print(f"  cnnarena train: epoch {i}                      {s:8.2f} s")
    print(f"  ImageFolder+DataLoader(2 workers), per epoch {per_sample:8.2f} s   (decode only, no model)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from benchmarks import opt_in

    opt_in()
    main()
