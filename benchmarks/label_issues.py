"""Label issues found from pixels and from a pretrained backbone's features: precision and recall of the images the
doctor names, on real Fashion-MNIST images with a share of their labels flipped at random.

  python -m benchmarks.label_issues [--images 5000] [--flip 0.02]

Both take the same images, the same flipped labels and the same 5-fold logistic regression feeding cleanlab; only
the inputs differ: the images at 16×16 (pixels), or EfficientNet-Lite0's ImageNet features at 96 px (backbone).
Results: benchmarks/results/label_issues.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import write_result

ROOT = Path(__file__).resolve().parents[1]


def scores(flagged: list[int], flipped: set[int]) -> dict:
    hits = len(set(flagged) & flipped)
    return {"named": len(flagged), "flipped_named": hits, "precision": round(hits / max(1, len(flagged)), 4),
            "recall": round(hits / max(1, len(flipped)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--flip", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "label_issues.json")
    args = parser.parse_args()
    from cnnarena.data.label_issues import find_label_issues
    from cnnarena.data.sources import load_source
    from cnnarena.models.embeddings import backbone_embeddings, describe

    pool = load_source("fashion-mnist").pool
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.permutation(len(pool.labels))[:args.images])
    images, labels = pool.images[pick], pool.labels.numpy()[pick].copy()
    flipped = rng.permutation(len(labels))[:int(args.flip * len(labels))]
    for i in flipped:
        labels[i] = rng.choice([k for k in range(10) if k != labels[i]])
    rows = {}
    t0 = time.perf_counter()
    issues, _ = find_label_issues(images, labels)
    rows["pixels (16x16, logistic regression)"] = {**scores([i.index for i in issues], set(flipped.tolist())),
                                                   "seconds": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    features = backbone_embeddings(images)
    embed_seconds = time.perf_counter() - t0
    issues, _ = find_label_issues(images, labels, given=features)
    rows[f"backbone ({describe()}, logistic regression)"] = {
        **scores([i.index for i in issues], set(flipped.tolist())),
        "seconds": round(time.perf_counter() - t0, 1), "embedding_seconds": round(embed_seconds, 1)}
    write_result({"what": f"label issues on {args.images} Fashion-MNIST images, {100 * args.flip:g}% labels flipped",
                  "flipped": len(flipped), "rows": rows}, args.out)


if __name__ == "__main__":
    main()
