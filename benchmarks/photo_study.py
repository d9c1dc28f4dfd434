"""A study on a folder of photos: what running the backbone at a photo's resolution costs (issue 32).

    python -m benchmarks.photo_study [--images 600] [--out benchmarks/results/photo_study.json]

Generates `--images` photos-alike JPEGs of 256-512 px (Fashion-MNIST garments upscaled and tinted, one class per
garment), then, each in a fresh image cache and a fresh process, one after the other on this machine:
1. decoding the folder at 64 px (what every model saw before) and at the backbone's chosen size: seconds, cache
   size on disk, peak memory of the process;
2. `cnnarena study FOLDER` at its defaults (custom CNNs at 64 px, the backbone at the photo resolution), and the
   same study with `--image-size 64` (every model at 64 px, as before): wall time, and each model's input size and
   test accuracy.
Results are printed and written to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = {0: "tshirt", 1: "trouser", 2: "pullover", 5: "sandal", 7: "sneaker", 8: "bag"}
DECODE = ("import resource, sys, time; from cnnarena.data.sources import load_source; t = time.perf_counter(); "
          "load_source(sys.argv[1], image_size=int(sys.argv[2])); print(time.perf_counter() - t, "
          "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")


def generate(root: Path, images: int) -> None:
    from PIL import Image

    from cnnarena.data.sources import load_source

    pool = load_source("fashion-mnist").pool
    rng = np.random.default_rng(0)
    per_class = images // len(CLASSES)
    for label, name in CLASSES.items():
        (root / name).mkdir(parents=True)
        tint = rng.integers(0, 256, 3)
        for i, index in enumerate(np.flatnonzero(pool.labels.numpy() == label)[:per_class]):
            side = int(rng.integers(256, 513))
            gray = np.asarray(Image.fromarray(pool.images[index, 0].numpy()).resize((side, side), Image.BICUBIC))
            rgb = (0.7 * gray[..., None] + 0.3 * tint).clip(0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(root / name / f"{i:04d}.jpg", quality=90)


def decode(root: Path, size: int, cache: Path) -> dict[str, float]:
    env = {**os.environ, "CNNARENA_CACHE": str(cache)}
    seconds, max_rss_kb = subprocess.run([sys.executable, "-c", DECODE, str(root), str(size)], env=env, check=True,
                                         capture_output=True, text=True).stdout.split()
    cache_bytes = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    return {"size": size, "seconds": round(float(seconds), 2), "cache_mb": round(cache_bytes / 2**20, 1),
            "peak_rss_mb": round(int(max_rss_kb) / 1024)}


def study(root: Path, out: Path, cache: Path, extra: list[str]) -> dict:
    env = {**os.environ, "CNNARENA_CACHE": str(cache)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnarena", "study", str(root), "--out", str(out), *extra], env=env,
                   check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    comparison = json.loads((out / "comparison.json").read_text())
    models = {r["model"]: {"input_px": r.get("input_px") or json.loads((Path(r["run_dir"]) / "model.json")
                                                                      .read_text())["model"]["data_size"][0],
                           "test_accuracy": round(r["accuracy"], 4), "train_seconds": round(r["train_seconds"], 1),
                           "latency_ms": round(r["latency_ms"], 2)} for r in comparison["table"]}
    return {"wall_seconds": round(wall, 1), "models": models, "answer": comparison.get("answer")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/photo_study.json"))
    args = p.parse_args()
    from cnnarena.machine import describe

    with tempfile.TemporaryDirectory(prefix="cnnarena-photos-") as tmp:
        root = Path(tmp) / "photos"
        generate(root, args.images)
        megabytes = sum(f.stat().st_size for f in root.rglob("*.jpg")) / 2**20
        print(f"{sum(1 for _ in root.rglob('*.jpg'))} JPEGs, {megabytes:.0f} MB", flush=True)
        decodes = [decode(root, size, Path(tmp) / f"cache{size}") for size in (64, 224)]
        for d in decodes:
            print(f"decode at {d['size']} px: {d['seconds']} s, cache {d['cache_mb']} MB, peak {d['peak_rss_mb']} MB",
                  flush=True)
        after = study(root, Path(tmp) / "after", Path(tmp) / "cache-after", [])
        print(f"study at defaults: {after['wall_seconds']} s {after['models']}", flush=True)
        before = study(root, Path(tmp) / "before", Path(tmp) / "cache-before", ["--image-size", "64"])
        print(f"study with --image-size 64: {before['wall_seconds']} s {before['models']}", flush=True)
    result = {"machine": describe("cpu"), "date": time.strftime("%Y-%m-%d"), "images": args.images,
              "jpeg_mb": round(megabytes, 1), "decode": decodes, "study_defaults": after,
              "study_all_at_64px": before,
              "wall_time_ratio_defaults_vs_64px": round(after["wall_seconds"] / before["wall_seconds"], 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
