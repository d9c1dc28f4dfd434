"""Keep freed tensor memory inside the process, so training and evaluation stop paying page faults (glibc).

A CPU training step frees and re-allocates the same large activations every step. glibc's malloc serves
blocks above a (moving) threshold with fresh mmap()s and returns heap tops to the kernel, so each step can
fault in and zero tens of MB again: at batch 256, simple-2conv took ~3,000-7,000 minor faults per step and
its rounds varied by 20%. Raising the thresholds (what PyTorch's CPU tuning guide gets by preloading
jemalloc/tcmalloc) made the same A/B runs 6-10% faster at batch 256 and steady; batch 32 did not change.
Evaluation gains most: EfficientNet-Lite0 at 80 px, batch 1024, ran at 123 img/s with 20 s of system time per
2,048 images (every ~200 MB activation a fresh mmap); tuned before any allocation 374-457 img/s, tuned when
predict_logits() first runs (after the model is loaded) 236-290 img/s: the heap already laid out keeps some faults.
So the CLI tunes at start-up: `cnnarena evaluate` of that run (10,000 images) took 50 s instead of 84 s.

The setting is process-wide and stays on, so the library never applies it by itself: the CLI opts in at start-up
(runtime.configure(tune_malloc=True)); a user who set MALLOC_*_ variables keeps theirs.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4  # glibc's mallopt() numbers
_SETTINGS = ((_M_MMAP_THRESHOLD, 32 << 20),  # glibc's largest allowed value: blocks up to 32 MB from the heap
             (_M_MMAP_MAX, 0),  # and larger ones too (a pretrained net's batch-1024 activations are ~200 MB)
             (_M_TRIM_THRESHOLD, 4 << 30),  # give memory back only when 4 GB lie free at the heap top
             (_M_TOP_PAD, 256 << 20))  # grow the heap in large steps (address space only until touched)
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's malloc thresholds once per process; True when they are in effect."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS)
    except (OSError, AttributeError):  # not glibc (musl, another allocator preloaded without mallopt)
        return False
