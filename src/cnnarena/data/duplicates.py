"""Exact and near-duplicate images, and the groups they form (which a leakage-free split keeps on one side).

Exact duplicates have the same decoded pixels (a hash of the stored uint8 image; for files, stored at the cache's
resolution, which is what every model sees). Near-duplicates (re-encoded, resized, cropped or brightened copies) are
found in two steps:
1. candidates: each image's NEIGHBOURS nearest in perceptual hash (imagehash's pHash, within PHASH_CANDIDATE_BITS of
   64 bits), and in small thumbnails of the whole image and of its centre (a crop moves
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
NEIGHBOURS = 20  # per image, in pHash and in each kind of thumbnail
# (share of the image kept about its centre, side in px): the whole image, and two centres (a crop shifts and scales
# the whole; the centre moves less)
THUMBNAILS = ((1.0, 8), (0.8, 12), (0.7, 8))
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
    MAX_CONFIRMED candidates: the closest in pHash were checked)."""
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
    """(a, b) pairs, a < b, that may be copies, closest perceptual hashes first: each image's NEIGHBOURS nearest in
    pHash (within PHASH_CANDIDATE_BITS), and in small thumbnails of the whole image and of its centre (pHash misses
    crops; the thumbnails catch them). At most ~4·NEIGHBOURS per image: the work grows with the images, not with
    their pairs (6,000 look-alike-heavy Fashion-MNIST images have ~390,000 pairs within 16 bits)."""
    if len(images) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), False
    hashes = perceptual_hashes(images)
    pairs = [_nearest_hashes(hashes)]
    for keep, side in THUMBNAILS:
        pairs.append(_nearest_pairs(_thumbnails(images, side, keep)))
    both = np.unique(np.concatenate(pairs), axis=0).astype(np.int64)
    order = np.argsort(np.bitwise_count(hashes[both[:, 0]] ^ hashes[both[:, 1]]), kind="stable")
    return both[order, 0], both[order, 1], False


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


def _nearest_hashes(hashes: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(i, j), i < j, with j among i's NEIGHBOURS nearest hashes within PHASH_CANDIDATE_BITS, or i among j's."""
    k = min(NEIGHBOURS, len(hashes) - 1)
    found = []
    for lo in range(0, len(hashes), chunk):
        distance = np.bitwise_count(hashes[lo:lo + chunk, None] ^ hashes[None, :]).astype(np.int16)
        rows = np.arange(lo, lo + len(distance))
        distance[rows - lo, rows] = 99  # not itself
        nearest = np.argpartition(distance, k - 1, axis=1)[:, :k]
        close = np.take_along_axis(distance, nearest, 1) <= PHASH_CANDIDATE_BITS
        found.append(np.stack([np.repeat(rows, k)[close.ravel()], nearest.ravel()[close.ravel()]], 1))
    return np.sort(np.concatenate(found), axis=1)


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
