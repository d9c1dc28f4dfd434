"""A Hugging Face dataset as DATA against the same images as class folders: first load (decode into the cache) and
later loads, wall time and peak memory, each in a fresh process.

    python -m benchmarks.hf_source [--size 64] [--rounds 2]

Fashion-MNIST's 70,000 images (Debian's dataset-fashion-mnist, or the cache's download) become PNGs twice: a
`save_to_disk` dataset with train and test splits (image bytes in Arrow, a ClassLabel), and class-per-subfolder
folders (train/, test/ beside each other, loaded as two sources). Each load runs `load_source` in a subprocess with
a fresh image cache, at `--size` (Fashion-MNIST's 28 px images resized); peak memory is the largest resident set of
any one process (that process, or one of its decoding workers), pages of the memory-mapped cache included. Loads of
the two layouts alternate, `--rounds` times, and the best round of each is kept; the ratios are HF / folders.
Results: benchmarks/results/hf_source.json.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import write_result

ROOT = Path(__file__).resolve().parents[1]

LOAD = """
import json, resource, sys, time
from cnnarena.data.sources import load_source
t0 = time.perf_counter()
sources = [load_source(spec, image_size=int(sys.argv[1]), cache_dir=sys.argv[2]) for spec in sys.argv[3:]]
seconds = time.perf_counter() - t0
for source in sources:  # touch every pixel, as training does
    for part in (source.pool, source.test):
        for start in range(0, len(part) if part is not None else 0, 4096):
            int(part.images[start:start + 4096].sum())  # in slices: a sum upcasts its input
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"seconds": round(seconds, 2), "peak_mb": round(peak / 1024), "images": sum(
    len(s.pool) + (len(s.test) if s.test is not None else 0) for s in sources)}))
"""


def write_both(root: Path) -> tuple[Path, list[Path]]:
    import datasets
    from PIL import Image

    from cnnarena.data.sources import load_source

    source = load_source("fashion-mnist")
    hf_path, folders = root / "fashion-mnist-hf", []
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(source.classes))})
    splits = {}
    for split, part in (("train", source.pool), ("test", source.test)):
        folder = root / "folders" / split
        encoded = []
        for i, (pixels, label) in enumerate(zip(part.images.numpy()[:, 0], part.labels.tolist(), strict=True)):
            out = io.BytesIO()
            Image.fromarray(pixels, "L").save(out, format="PNG")
            encoded.append({"bytes": out.getvalue(), "path": None})
            (folder / source.classes[label].replace("/", "-")).mkdir(parents=True, exist_ok=True)
            (folder / source.classes[label].replace("/", "-") / f"{i:05d}.png").write_bytes(out.getvalue())
        splits[split] = datasets.Dataset.from_dict({"image": encoded, "label": part.labels.tolist()},
                                                   features=features)
        folders.append(folder)
    datasets.DatasetDict(splits).save_to_disk(str(hf_path))
    return hf_path, folders


def load(specs: list[Path], size: int, cache: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", LOAD, str(size), str(cache), *map(str, specs)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hf_source.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnnarena-hf-bench-") as tmp:
        hf_path, folders = write_both(Path(tmp))
        best: dict[str, dict[str, dict]] = {"hf": {}, "folders": {}}
        for r in range(args.rounds):
            for name, specs in (("hf", [hf_path]), ("folders", folders)):
                cache = Path(tmp) / f"cache-{name}-{r}"
                for phase in ("first_load", "later_load"):  # the second finds everything in the cache
                    measured = load(specs, args.size, cache)
                    kept = best[name].get(phase)
                    if kept is None or measured["seconds"] < kept["seconds"]:
                        best[name][phase] = measured
                    print(name, phase, measured)
    ratios = {phase: {"seconds": round(best["hf"][phase]["seconds"] / best["folders"][phase]["seconds"], 2),
                      "peak_mb": round(best["hf"][phase]["peak_mb"] / best["folders"][phase]["peak_mb"], 2)}
              for phase in ("first_load", "later_load")}
    write_result({"what": "Fashion-MNIST's 70,000 PNGs as a save_to_disk dataset and as class folders, loaded with "
                          f"load_source at {args.size} px in a fresh process (best of {args.rounds} rounds)",
                  "hf": best["hf"], "folders": best["folders"], "hf_over_folders": ratios}, args.out)


if __name__ == "__main__":
    main()
