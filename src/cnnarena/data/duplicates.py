"""Exact and near-duplicate images, and the groups they form (which a leakage-free split keeps on one side).

Exact duplicates have the same decoded pixels (a hash of the stored uint8 image; for files, stored at the cache's
resolution, which is what every model sees). Near-duplicates (re-encoded, resized, slightly cropped or recoloured
copies) are found in two steps:
1. candidates: pairs whose perceptual hashes (imagehash's pHash, a DCT of the 32x32 image) differ in at most
   PHASH_CANDIDATE_BITS of 64 bits, compared all against all with numpy's popcount;
2. confirmation: the normalised cross-correlation of the two images (grayscale, 48x48), the best over zooms of up
   to 12% and shifts of one against the other (so a crop of a few pixels still lines up), must reach NCC_CONFIRM.
pHash alone confuses distinct small, centred objects (Fashion-MNIST's plain shirts share hashes by the thousand);
the correlation step is what keeps the reported pairs true. Both thresholds were chosen on real Fashion-MNIST
images with injected copies (tests/test_doctor.py holds the recall and precision they must keep).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PHASH_CANDIDATE_BITS = 16
NCC_CONFIRM = 0.98
PREFILTER = 0.8  # unaligned correlation a pair needs before the aligned search (true copies measured 0.89 and up)
MAX_CANDIDATES = 2_000_000  # hash-close pairs kept (closest first): bounds memory
MAX_ALIGNED = 20_000  # pairs given the aligned search (~0.5 ms each on 2 CPU cores), the most correlated first
COARSE_MARGIN = 0.03
NEAR_MIN_SIDE = 32  # originals smaller than this (digits' 8x8, MNIST's 28x28) hold too little detail to tell a
# copy from a look-alike: the near-duplicate search is skipped for them
_ZOOMS = (1.0, *(z for k in range(1, 7) for z in (1 + 0.02 * k, 1 / (1 + 0.02 * k))))  # crops up to ~6% a side
_SHIFTS = (-1, 0, 1)
_SIDE, _HALF = 48, 18  # images compared at 48x48, on their central 36x36


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


def near_pairs(images: torch.Tensor, exclude: Iterable[tuple[int, int]] = ()) -> tuple[list[Pair], bool]:
    """Near-duplicate pairs (not exact ones, not `exclude`d), and whether the search was cut short (more than
    MAX_CANDIDATES hash-close pairs or MAX_ALIGNED correlated ones: the most similar were searched)."""
    hashes = perceptual_hashes(images)
    a, b, capped = _candidates(hashes)
    skip = set(exclude)
    if skip:
        keep = np.array([(int(i), int(j)) not in skip for i, j in zip(a, b, strict=True)], dtype=bool)
        a, b = a[keep], b[keep]
    if len(a) == 0:
        return [], capped
    rough = _plain_correlation(images, a, b)  # cheap: drops most look-alikes before the aligned search
    order = np.argsort(-rough, kind="stable")
    order = order[rough[order] >= PREFILTER]
    capped = capped or len(order) > MAX_ALIGNED
    a, b = a[order[:MAX_ALIGNED]], b[order[:MAX_ALIGNED]]
    similarity = _aligned_correlation(images, a, b)
    found = similarity >= NCC_CONFIRM
    return [Pair(int(i), int(j), "near", round(float(s), 4))
            for i, j, s in zip(a[found], b[found], similarity[found], strict=True)], capped


def _candidates(hashes: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, bool]:
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


def _small(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    x = _grayscale(images[index]).float().unsqueeze(1) / 255
    return F.interpolate(x, size=(_SIDE, _SIDE), mode="bilinear", align_corners=False, antialias=True)


def _centre(x: torch.Tensor) -> torch.Tensor:
    c = _SIDE // 2
    return _normalised(x[:, :, c - _HALF:c + _HALF, c - _HALF:c + _HALF])


def _views(x: torch.Tensor, shifts: tuple[int, ...] = _SHIFTS) -> torch.Tensor:
    """N×V×D: the central crop of each image at every zoom and shift, normalised."""
    views = []
    for zoom in _ZOOMS:
        side = int(round(_SIDE * zoom))
        z = x if side == _SIDE else F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        m = side // 2
        for dy in shifts:
            for dx in shifts:
                views.append(_normalised(z[:, :, m - _HALF + dy:m + _HALF + dy, m - _HALF + dx:m + _HALF + dx]))
    return torch.stack(views, 1)


def _plain_correlation(images: torch.Tensor, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    members = np.unique(np.concatenate([a, b]))
    where = np.full(images.shape[0], -1, dtype=np.int64)
    where[members] = np.arange(len(members))
    centre = torch.cat([_centre(_small(images, torch.as_tensor(members[lo:lo + 1024])))
                        for lo in range(0, len(members), 1024)])
    ca, cb = centre[torch.as_tensor(where[a])], centre[torch.as_tensor(where[b])]
    return (ca * cb).sum(1).numpy()


def _aligned_correlation(images: torch.Tensor, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Best normalised cross-correlation of each pair over zooms and shifts of either image against the other:
    zooms alone first, then zooms and shifts for the pairs that came within COARSE_MARGIN of NCC_CONFIRM (a
    look-alike rarely does, so most pairs cost 13 views instead of 117)."""
    coarse = _correlation(images, a, b, (0,))
    close = np.flatnonzero(coarse >= NCC_CONFIRM - COARSE_MARGIN)
    fine = coarse.copy()
    if len(close):
        fine[close] = np.maximum(coarse[close], _correlation(images, a[close], b[close], _SHIFTS))
    return fine


def _correlation(images: torch.Tensor, a: np.ndarray, b: np.ndarray, shifts: tuple[int, ...],
                 chunk: int = 256) -> np.ndarray:
    """(views are built per chunk of pairs: all of them at once would take ~0.6 MB per image)"""
    out = []
    for lo in range(0, len(a), chunk):
        xa = _small(images, torch.as_tensor(a[lo:lo + chunk]))
        xb = _small(images, torch.as_tensor(b[lo:lo + chunk]))
        one = torch.einsum("nvd,nd->nv", _views(xa, shifts), _centre(xb)).amax(1)
        two = torch.einsum("nvd,nd->nv", _views(xb, shifts), _centre(xa)).amax(1)
        out.append(torch.maximum(one, two))
    return torch.cat(out).numpy() if out else np.zeros(0)


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
