"""Exact and near-duplicate images, and the groups they form (which a leakage-free split keeps on one side).

Exact duplicates have the same decoded pixels (a hash of the stored uint8 image; for files, stored at the cache's
resolution, which is what every model sees). Near-duplicates (re-encoded, resized, cropped or brightened copies) are
found in two steps:
1. candidates: pairs whose perceptual hashes (imagehash's pHash) differ in at most PHASH_CANDIDATE_BITS of 64 bits,
   and each image's NEIGHBOURS nearest in small thumbnails of the whole image and of its centre (a crop moves
   pHash's bits; it moves a blurred thumbnail little);
2. confirmation (copy_check.py): the pair aligned by OpenCV's ECC must be the same picture, not a look-alike.
pHash and thumbnails alone confuse distinct simple images (Fashion-MNIST's plain shirts, a "1" and a "7"): the
confirmation is what keeps the reported pairs true. benchmarks/near_duplicates.py measures both on generated copies
and look-alikes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .copy_check import NEAR_THRESHOLD, same_picture

PHASH_CANDIDATE_BITS = 16
NEIGHBOURS = 20  # per image and thumbnail kind
MAX_CANDIDATES = 2_000_000  # hash-close pairs kept (closest first): bounds memory
MAX_CONFIRMED = 400_000  # pairs given the copy check (~0.5 ms each), hash-close ones first
NEAR_MIN_SIDE = 32  # originals smaller than this (digits' 8x8, MNIST's 28x28) hold too little detail to tell a
# copy from a look-alike: the near-duplicate search is skipped for them


@dataclass(frozen=True)
class Pair:
    a: int  # indices into the images searched, a < b
    b: int
    kind: str  # "exact" or "near"
    similarity: float  # 1.0 for exact; the confirmed correlation for near


def exact_pairs(images: torch.Tensor) -> list[Pair]:
    """Every pair of images with identical pixels (uint8 N×C×H×W), as (first, other) per group member."""
    by_hash: dict[bytes, list[int]] = {}
    array = images.numpy() if isinstance(images, torch.Tensor) else images
    for i in range(array.shape[0]):
        by_hash.setdefault(hashlib.blake2b(np.ascontiguousarray(array[i]).data, digest_size=16).digest(), []).append(i)
    return [Pair(group[0], other, "exact", 1.0) for group in by_hash.values() if len(group) > 1
            for other in group[1:]]


def perceptual_hashes(images: torch.Tensor) -> np.ndarray:
    """imagehash.phash of each image, as uint64 (N)."""
    import imagehash
    from PIL import Image

    out = np.empty(images.shape[0], dtype=np.uint64)
    for i, image in enumerate(_grayscale(images).numpy()):
        bits = imagehash.phash(Image.fromarray(image)).hash.flatten()
        out[i] = np.packbits(bits).view(">u8")[0]
    return out


def near_pairs(images: torch.Tensor, exclude: Iterable[tuple[int, int]] = (),
               threshold: float = NEAR_THRESHOLD) -> tuple[list[Pair], bool]:
    """Near-duplicate pairs (not exact ones, not `exclude`d), and whether the search was cut short (more than
    MAX_CANDIDATES candidate pairs or MAX_CONFIRMED given the check: the most similar were checked)."""
    a, b, capped = candidates(images)
    skip = set(exclude)
    if skip:
        keep = np.array([(int(i), int(j)) not in skip for i, j in zip(a, b, strict=True)], dtype=bool)
        a, b = a[keep], b[keep]
    if len(a) > MAX_CONFIRMED:
        capped = True
        a, b = a[:MAX_CONFIRMED], b[:MAX_CONFIRMED]
    similarity = same_picture(images, a, b, threshold)
    found = similarity >= threshold
    return [Pair(int(i), int(j), "near", round(float(s), 4))
            for i, j, s in zip(a[found], b[found], similarity[found], strict=True)], capped


def candidates(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    """(a, b) pairs, a < b, that may be copies: close perceptual hashes, or among each other's NEIGHBOURS nearest
    small thumbnails (pHash misses crops; the thumbnails of the whole image and of its centre catch them)."""
    a, b, capped = _hash_candidates(perceptual_hashes(images))
    pairs = [np.stack([a, b], 1)]
    for keep, side in ((1.0, 8), (0.8, 12)):
        pairs.append(_nearest_pairs(_thumbnails(images, side, keep)))
    both = np.unique(np.concatenate(pairs), axis=0) if len(images) > 1 else np.zeros((0, 2), np.int64)
    return both[:, 0].astype(np.int64), both[:, 1].astype(np.int64), capped


def _thumbnails(images: torch.Tensor, side: int, keep: float) -> torch.Tensor:
    """N×side² grayscale thumbnails of the central `keep` of each image, normalised (cosine = correlation)."""
    gray = _grayscale(images).float().unsqueeze(1)
    n = gray.shape[-1]
    margin = int(n * (1 - keep) / 2)
    if margin:
        gray = gray[..., margin:n - margin, margin:n - margin]
    return _normalised(F.adaptive_avg_pool2d(gray, side))


def _nearest_pairs(vectors: torch.Tensor, chunk: int = 512) -> np.ndarray:
    """(i, j), i < j, with j among i's NEIGHBOURS most similar vectors or i among j's."""
    k = min(NEIGHBOURS, len(vectors) - 1)
    found = []
    for lo in range(0, len(vectors), chunk):
        similarity = vectors[lo:lo + chunk] @ vectors.T
        rows = torch.arange(lo, lo + len(similarity))
        similarity[rows - lo, rows] = -2  # not itself
        nearest = similarity.topk(k, dim=1).indices
        found.append(torch.stack([rows.repeat_interleave(k), nearest.flatten()], 1))
    pairs = torch.cat(found).numpy()
    return np.sort(pairs, axis=1)


def _hash_candidates(hashes: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, bool]:
    """(a, b) with a < b and Hamming distance <= PHASH_CANDIDATE_BITS, closest first when capped."""
    a_parts, b_parts, d_parts = [], [], []
    n = len(hashes)
    for lo in range(0, n, chunk):
        block = hashes[lo:lo + chunk]
        distance = np.bitwise_count(block[:, None] ^ hashes[None, lo:])  # only pairs with b >= lo
        rows, cols = np.nonzero(distance <= PHASH_CANDIDATE_BITS)
        cols = cols + lo
        rows = rows + lo
        upper = cols > rows
        a_parts.append(rows[upper])
        b_parts.append(cols[upper])
        d_parts.append(distance[rows[upper] - lo, cols[upper] - lo])
    a = np.concatenate(a_parts) if a_parts else np.zeros(0, np.int64)
    b = np.concatenate(b_parts) if b_parts else np.zeros(0, np.int64)
    d = np.concatenate(d_parts) if d_parts else np.zeros(0, np.int64)
    capped = len(a) > MAX_CANDIDATES
    if capped:
        order = np.argsort(d, kind="stable")[:MAX_CANDIDATES]
        a, b = a[order], b[order]
    return a, b, capped


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * weights).sum(1).round().clamp(0, 255).to(torch.uint8)
    return images[:, 0]


def _normalised(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / (x.norm(dim=1, keepdim=True) + 1e-6)


def groups(n: int, pairs: Iterable[Pair]) -> list[list[int]]:
    """Connected groups (size >= 2) of the pairs' images, each sorted, ordered by first member (union-find)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pair in pairs:
        ra, rb = find(pair.a), find(pair.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    return sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])


def near_search_applies(original_sizes: list[tuple[int, int]] | None) -> bool:
    """Whether the originals are large enough for near-duplicates to mean copies (see NEAR_MIN_SIDE)."""
    return bool(original_sizes) and float(np.median([min(h, w) for h, w in original_sizes])) >= NEAR_MIN_SIDE


def split_groups(images: torch.Tensor, *, near: bool) -> tuple[list[list[int]], int, int]:
    """(groups of duplicate images a split keeps on one side, exact pairs, near pairs): exact duplicates always,
    near-duplicates when `near` (file sources of photo-sized images: the scraped folders where copies hide)."""
    exact = exact_pairs(images)
    found = near_pairs(images, {(p.a, p.b) for p in exact})[0] if near and len(images) > 1 else []
    return groups(images.shape[0], [*exact, *found]), len(exact), len(found)
