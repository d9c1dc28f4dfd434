"""Start-up of the command line, as a user meets it: `python -m benchmarks.startup --label after`.

Each figure is the best of --repeats whole processes, run one after another on this machine:
1. `cnnarena --help` and `python -c "import cnnarena"`;
2. `cnnarena train digits --model simple-2conv --epochs 1`: seconds to its first line of output, and to its end;
3. on a class folder of Fashion-MNIST PNGs (digits' when Fashion-MNIST is not installed), a first and a second
   `train --epochs 1`: the data seconds of each (metrics.json's data_seconds: decoding, the duplicate search,
   the split), so that a cache that does not hold shows.
Results are added under --label to benchmarks/results/startup.json (other labels are kept), so a run before a
change and one after sit side by side.
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

from benchmarks import machine

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "cnnarena.cli"]


def timed(argv: list[str], env: dict) -> tuple[float, float]:
    """(seconds to the first line on stdout or stderr, seconds to the end) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    first = None
    for _ in proc.stdout:
        if first is None:
            first = time.perf_counter() - t0
    proc.wait()
    end = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit code {proc.returncode}")
    return (first if first is not None else end), end


def best(argv: list[str], env: dict, repeats: int) -> dict:
    runs = [timed(argv, env) for _ in range(repeats)]
    return {"first_line_s": round(min(r[0] for r in runs), 2), "total_s": round(min(r[1] for r in runs), 2)}


def make_folder(root: Path, images: int) -> Path:
    """Class folders of real images: Fashion-MNIST's when installed, else scikit-learn's digits."""
    import numpy as np
    from PIL import Image

    try:
        from cnnarena.data.idx import find_fashion_dir, read_idx

        found = find_fashion_dir(None)
        pixels = read_idx(found / "train-images-idx3-ubyte.gz")[:images]
        labels = read_idx(found / "train-labels-idx1-ubyte.gz")[:images]
    except Exception:  # noqa: BLE001 - not installed: the digits every machine has
        from sklearn.datasets import load_digits

        d = load_digits()
        pixels, labels = (d.images * 255 / 16).astype(np.uint8), d.target
    for i, (img, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / f"class_{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        # photo-sized, as the near-duplicate search expects of a folder (it runs on small images only for arrays)
        Image.fromarray(np.asarray(img, np.uint8)).resize((128, 128)).save(folder / f"{i:05d}.png")
    return root


def folder_data_seconds(work: Path, env: dict) -> dict:
    folder = make_folder(work / "photos", 6000)
    seconds = {}
    for attempt in ("first", "second"):
        out = work / f"run-{attempt}"
        timed([*CLI, "train", str(folder), "--model", "simple-2conv", "--epochs", "1", "--out", str(out)], env)
        seconds[f"{attempt}_train_data_s"] = json.loads((out / "metrics.json").read_text())["data_seconds"]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="the name these figures are kept under, e.g. before / after")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "startup.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnnarena-startup-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "CNNARENA_CACHE": str(work / "cache")}
        train = [*CLI, "train", "digits", "--model", "simple-2conv", "--epochs", "1", "--out"]
        result = {
            "help": best([*CLI, "--help"], env, args.repeats),
            "import": best([sys.executable, "-c", "import cnnarena"], env, args.repeats),
        }
        cold = timed([*train, str(work / "cold")], env)  # the first run fills the image cache
        runs = [timed([*train, str(work / f"run{i}")], env) for i in range(args.repeats)]  # new directories
        result["train_digits_1_epoch"] = {"first_line_s": round(min(r[0] for r in runs), 2),
                                          "total_s": round(min(r[1] for r in runs), 2),
                                          "cold_cache_total_s": round(cold[1], 2)}
        result["folder"] = folder_data_seconds(work, env)
    result["machine"] = machine()
    result["date"] = time.strftime("%Y-%m-%d %H:%M")
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    saved[args.label] = result
    args.out.write_text(json.dumps(saved, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
