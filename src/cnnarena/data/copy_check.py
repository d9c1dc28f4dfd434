"""Whether two images are the same picture: a copy re-encoded, resized, lightly cropped or brightened, not a
look-alike (another photo of the same kind of thing, another person's handwriting of the same digit).

The second image is aligned onto the first by OpenCV's ECC (enhanced correlation coefficient) image alignment with
an affine warp, which also absorbs brightness and contrast. A pair is the same picture when, after that alignment:
- the intensities agree: the ECC correlation reaches `threshold` (NEAR_THRESHOLD by default);
- the edges agree: the correlation of the two gradient-magnitude images reaches EDGE_AGREEMENT (smooth, low-detail
  images correlate highly even when their strokes lie elsewhere: a "1" against a "7"), with both images cut at
  the lower of their full scales (a brightened copy clips its highlights flat, which removes the gradients inside
  its strokes);
- the warp is one a copy can have: no shear or rotation beyond a few percent, and one frame inside the other
  within FRAME_SLACK, at least MIN_CROP_SCALE of its side (a crop of up to ~10% a side);
- the colours agree up to one common gain, on the pixels neither image clips (a brightened copy clips its
  highlights; a drawing of the same shape in another colour does not pass).
It runs twice: at 32 px on every candidate (about half a millisecond a pair on one core), then at 64 px on
those still standing; the pairs are spread over every core.
The thresholds were set on generated copies and look-alikes (benchmarks/near_duplicates.py holds the figures).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

NEAR_THRESHOLD = 0.99  # the ECC correlation a copy reaches at 64 px (--near-threshold)
COARSE_SIDE, FINE_SIDE = 32, 64  # every candidate is tried at 32 px; the pairs that pass, again at 64 px
COARSE_THRESHOLD = 0.94  # the correlation a copy reaches at 32 px
EDGE_AGREEMENT = 0.95
FRAME_SLACK = 0.03  # of the side: how far a crop's frame may stick out of the other image's
MAX_SHEAR = 0.1
MIN_CROP_SCALE = 0.78  # a crop of 10% on both sides leaves 0.8 of the side
COLOUR_TOLERANCE = 0.1  # of full scale: a pixel whose channels differ by more after the common gain disagrees
COLOUR_SHIFT = 0.05  # of full scale: how far the median colour may move after the common gain
COLOUR_DISAGREEMENT = 0.25  # the share of unclipped pixels that may disagree (JPEG's chroma noise at edges)


def same_picture(images: torch.Tensor, a: np.ndarray, b: np.ndarray,
                 threshold: float = NEAR_THRESHOLD) -> np.ndarray:
    """For each pair (a[k], b[k]) of uint8 N×C×H×W images: its ECC correlation at 64 px when it is the same
    picture, else -1."""
    members = np.unique(np.concatenate([a, b])) if len(a) else np.zeros(0, np.int64)
    where = np.full(int(members.max()) + 1 if len(members) else 0, -1, dtype=np.int64)
    where[members] = np.arange(len(members))
    work = (_resized(images, members, COARSE_SIDE), _resized(images, members, FINE_SIDE), threshold)
    return _checked_everywhere(work, where[a], where[b])


_WORK: tuple[np.ndarray, np.ndarray, float] | None = None  # in a forked worker: what it checks
PROCESS_MIN_PAIRS = 4096  # below, threads (a process pool's start costs more than it saves)
CHUNK = 512


def _checked_everywhere(work: tuple, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """_checked over chunks of the pairs, on every core: forked processes for many pairs (the checks' Python holds
    the GIL about a third of the time, so threads give ~1.4x on 2 cores), threads for a few."""
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    import cv2

    workers = min(8, os.cpu_count() or 1)
    chunks = [(x[lo:lo + CHUNK], y[lo:lo + CHUNK]) for lo in range(0, len(x), CHUNK)]
    forked = len(x) >= PROCESS_MIN_PAIRS and workers > 1 and sys.platform == "linux"
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # tiny images: OpenCV's thread pool costs more than it saves (given back below)
    try:
        if forked:  # the workers get the images without a copy, and touch only numpy and OpenCV, never torch's threads
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                     initializer=_worker_start, initargs=(os.getpid(), work)) as pool:
                parts = list(pool.map(_checked, *zip(*chunks, strict=True)))
        else:
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(lambda xy: _checked(*xy, work=work), chunks))
    finally:
        cv2.setNumThreads(threads)
    return np.concatenate(parts) if parts else np.zeros(0)


def _worker_start(parent: int, work: tuple) -> None:
    import cv2

    from .imageio import die_with_parent

    global _WORK
    _WORK = work  # with fork, initargs reach the worker without pickling
    die_with_parent(parent)
    cv2.setNumThreads(1)


def _checked(x: np.ndarray, y: np.ndarray, work: tuple | None = None) -> np.ndarray:
    """The pairs (x[k], y[k]) of the work's images (a forked worker's _WORK when not given): their correlation at
    64 px when the same picture, else -1."""
    import cv2

    coarse, fine, threshold = work or _WORK
    out = np.full(len(x), -1.0)
    for k in range(len(x)):
        rough = _check(cv2, coarse[x[k]], coarse[y[k]], np.eye(2, 3, dtype=np.float32), COARSE_THRESHOLD,
                       final=False)
        if rough is None:
            continue
        warp = rough[1].copy()
        warp[:, 2] *= FINE_SIDE / COARSE_SIDE  # the coarse translation, in fine pixels
        found = _check(cv2, fine[x[k]], fine[y[k]], warp, threshold, final=True)
        if found is not None:
            out[k] = found[0]
    return out


def _resized(images: torch.Tensor, members: np.ndarray, side: int) -> np.ndarray:
    """float32 [0,1] M×C×side×side, channel-first as stored."""
    x = images[torch.as_tensor(members, dtype=torch.long)].float() / 255
    if x.shape[-1] != side or x.shape[-2] != side:
        x = F.interpolate(x, size=(side, side), mode="area" if x.shape[-1] > side else "bilinear")
    return x.numpy().astype(np.float32)


def _check(cv2, first: np.ndarray, second: np.ndarray, warp: np.ndarray, threshold: float,
           final: bool) -> tuple[float, np.ndarray] | None:
    """(correlation, warp) when `second` aligned onto `first` passes every test (the edges and the colours only
    when `final`: the coarse pass is too coarse for them), else None."""
    g1, g2 = first.mean(0), second.mean(0)
    steps = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40 if final else 30, 1e-4 if final else 1e-3)
    try:
        cc, warp = cv2.findTransformECC(g1, g2, warp, cv2.MOTION_AFFINE, steps, None, 1)
    except cv2.error:  # no convergence (flat images, nothing in common)
        return None
    side = g1.shape[0]
    flags = cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP
    turned = abs(warp[0, 1]) + abs(warp[1, 0]) > MAX_SHEAR
    if not final and cc < threshold:
        return None
    if not final and not turned:  # the coarse pass: ECC's own correlation and the warp's shape are enough
        return (float(cc), warp) if _a_copys_warp(warp, side) else None
    if turned:  # a shape that looks the same turned (a disc): no turn
        warp = _without_turn(cv2, warp, g1)
    inside = cv2.warpAffine(np.ones_like(g2), warp, (side, side), flags=flags, borderValue=0) > 0.999
    inside[:2], inside[-2:], inside[:, :2], inside[:, -2:] = False, False, False, False
    if inside.mean() < 0.5 or not _a_copys_warp(warp, side):
        return None
    aligned = cv2.warpAffine(g2, warp, (side, side), flags=flags)
    cc = _correlation(g1, aligned, inside)
    if cc < threshold:
        return None
    if not final:
        return float(cc), warp
    if _correlation(*(_edges(cv2, g) for g in _common_ceiling(g1, aligned, inside)), inside) < EDGE_AGREEMENT:
        return None
    colour = np.stack([cv2.warpAffine(c, warp, (side, side), flags=flags) for c in second]) \
        if first.shape[0] == 3 else None
    if colour is not None and not _colours_agree(first[:, inside], colour[:, inside]):
        return None
    return float(cc), warp


def _a_copys_warp(warp: np.ndarray, side: int) -> bool:
    """Little shear or rotation, and one image's frame inside the other's (up to FRAME_SLACK) at a scale a crop of
    up to ~10% a side gives: a crop's warp, in one direction or the other."""
    linear = warp[:, :2]
    if abs(linear[0, 1]) + abs(linear[1, 0]) > MAX_SHEAR:
        return False
    corners = np.array([[0, side - 1, 0, side - 1], [0, 0, side - 1, side - 1], [1, 1, 1, 1]], np.float32)
    inverse = np.linalg.inv(np.vstack([warp, [0, 0, 1]]))[:2]
    for w in (warp, inverse):
        scales = np.linalg.norm(w[:, :2], axis=0)
        if _sticking_out(w @ corners, side) <= FRAME_SLACK and MIN_CROP_SCALE <= scales.min() \
                and scales.max() <= 1 + FRAME_SLACK:
            return True
    return False


def _without_turn(cv2, warp: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """The warp with its rotation and shear taken out, about the centre of the first image's edges (the point a
    symmetric shape turns about): a copy is scaled and shifted, never turned."""
    edges = _edges(cv2, gray)
    total = float(edges.sum()) or 1.0
    ys, xs = np.mgrid[:gray.shape[0], :gray.shape[1]]
    centre = np.array([(edges * xs).sum() / total, (edges * ys).sum() / total], np.float32)
    plain = warp.copy()
    plain[0, 1] = plain[1, 0] = 0
    plain[0, 0], plain[1, 1] = np.linalg.norm(warp[:, 0]), np.linalg.norm(warp[:, 1])
    plain[:, 2] = warp[:, :2] @ centre + warp[:, 2] - plain[:, :2] @ centre  # the centre still maps where it did
    return plain


def _sticking_out(points: np.ndarray, side: int) -> float:
    return float(max(-points.min(), points.max() - (side - 1), 0.0)) / side


def _common_ceiling(first: np.ndarray, second: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images in the second's intensities (a least-squares gain and offset), cut at the lower of their two
    full scales: what a brightened copy clipped is clipped in both, and its flat highlights compare as flat."""
    x, y = first[mask], second[mask]
    gain, offset = np.polyfit(x, y, 1) if x.std() > 1e-6 else (1.0, 0.0)
    ceiling = min(1.0, gain + offset) if gain > 0 else 1.0
    return (np.minimum(gain * first + offset, ceiling).astype(np.float32),
            np.minimum(second, ceiling).astype(np.float32))


def _edges(cv2, gray: np.ndarray) -> np.ndarray:
    return np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))


def _correlation(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
    x, y = x[mask] - x[mask].mean(), y[mask] - y[mask].mean()
    return float((x * y).sum() / (np.sqrt((x * x).sum() * (y * y).sum()) + 1e-9))


def _colours_agree(x: np.ndarray, y: np.ndarray) -> bool:
    """3×P pixels of each: the same colours up to one gain (brightness), on the pixels neither clips."""
    unclipped = (x.max(0) < 0.97) & (y.max(0) < 0.97)
    if unclipped.sum() < 0.02 * x.shape[1]:
        return True  # (nearly) all highlights: nothing left to compare
    x, y = x[:, unclipped], y[:, unclipped]
    gain = float((x * y).sum() / ((y * y).sum() + 1e-9))
    if np.abs(np.median(x, 1) - gain * np.median(y, 1)).max() > COLOUR_SHIFT:
        return False  # the typical colour moved: a recoloured drawing, not a brightened copy
    return float((np.abs(x - gain * y).max(0) > COLOUR_TOLERANCE).mean()) <= COLOUR_DISAGREEMENT
