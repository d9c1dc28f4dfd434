"""The resolution a pretrained backbone runs at on a folder (or CSV) of photos, when the user does not say.

Files are decoded once at one size; custom CNNs train at 64 px for speed, but an ImageNet backbone shrunk to 64 px
says more about the resolution than about fine-tuning. So on photos (the images' median short side at least
PHOTO_MIN) a backbone's run decodes them at the largest of PHOTO_SIZES that is at most the backbone's own size and
the photos' own, and that the time budget can hold for MIN_EPOCHS epochs (timed on this machine); never below
PHOTO_MIN unless the budget cannot hold one epoch there, and then the reason says so. --image-size and
--input-size override it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PHOTO_MIN = 128
PHOTO_SIZES = (224, 192, 160, 128)
BELOW_PHOTO_MIN = (112, 96, 80, 64)
MIN_EPOCHS = 3  # phase 1 on cached features and a few fine-tuning epochs
SAMPLE = 200  # image headers read to know the photos' size


@dataclass(frozen=True)
class Choice:
    size: int
    reason: str


def choose(median_side: int, native: int, budget_seconds: float | None,
           epoch_seconds: Callable[[int], float]) -> Choice | None:
    """The rule (None: not photos, the usual small-image rule applies). epoch_seconds(size): one epoch's estimate."""
    if median_side < PHOTO_MIN:
        return None
    ceiling = min(native, median_side)
    sizes = [s for s in PHOTO_SIZES if s <= ceiling] or [PHOTO_MIN]
    seen = f"photos of {median_side} px (median short side)"
    if budget_seconds is None:
        return Choice(sizes[0], f"{seen}; at most the backbone's {native} px")
    for size in sizes:
        if MIN_EPOCHS * epoch_seconds(size) <= budget_seconds:
            return Choice(size, f"{seen}: the largest size up to {native} px whose {MIN_EPOCHS} epochs fit the "
                                f"{budget_seconds:g} s budget on this machine")
    if epoch_seconds(PHOTO_MIN) <= budget_seconds:
        return Choice(PHOTO_MIN, f"{seen}: fewer than {MIN_EPOCHS} epochs at {PHOTO_MIN} px fit the "
                                 f"{budget_seconds:g} s budget, but not going below {PHOTO_MIN} px on photos")
    smaller = next((s for s in BELOW_PHOTO_MIN if epoch_seconds(s) <= budget_seconds), BELOW_PHOTO_MIN[-1])
    return Choice(smaller, f"{seen}: the {budget_seconds:g} s budget cannot hold one epoch at {PHOTO_MIN} px, so "
                           f"{smaller} px (a larger --budget runs at {PHOTO_MIN} px or more)")


def median_short_side(root: Path, ids: list[str]) -> int:
    """The median short side of up to SAMPLE images spread over the listing (headers only: no decoding)."""
    from PIL import Image

    from ..data.imageio import is_regular_file

    step = max(1, len(ids) // SAMPLE)
    sides = []
    for image_id in ids[::step][:SAMPLE]:
        if not is_regular_file(root / image_id):
            continue
        try:
            with Image.open(root / image_id) as im:
                sides.append(min(im.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # unreadable files are reported by the decoding
    return int(statistics.median(sides)) if sides else 0


def epoch_timer(model_name: str, train_images: int, classes: int, device: Any = "cpu") -> Callable[[int], float]:
    """seconds(size) of one training epoch of the whole backbone, from two timed steps at PHOTO_MIN scaled by the
    pixel count (measured once, on first use)."""
    measured: dict[str, float] = {}

    def seconds(size: int) -> float:
        if "per_image" not in measured:
            measured["per_image"] = _seconds_per_image(model_name, classes, PHOTO_MIN, device)
        return train_images * measured["per_image"] * (size / PHOTO_MIN) ** 2

    return seconds


def _seconds_per_image(model_name: str, classes: int, size: int, device: Any, batch: int = 16) -> float:
    """On the device the run trains on (a GPU's epoch is not a CPU's)."""
    import torch

    from .registry import create_model

    device = torch.device(device)
    model = create_model(model_name, num_classes=classes, in_chans=3, data_size=(size, size),
                         classes=[str(i) for i in range(classes)], pretrained=False, input_size=size).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    times = []
    for _ in range(3):  # the first step warms up
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times[1:]) / batch


def for_run(cfg: Any, listing_of: Callable[[], Any], saved_image_size: int | None,
            device_of: Callable[[], Any] = lambda: "cpu") -> Choice | None:
    """The choice for a run config (None: the user chose, not a backbone, or not photos). A run resumed keeps the
    size it started with (saved_image_size, from its config.yaml); device_of() is the device it will train on."""
    from .registry import is_custom

    if cfg.image_size is not None or cfg.input_size is not None or is_custom(cfg.model):
        return None
    from .pretrained import default_input_size, is_pretrained_name, resolve_name  # timm: only for a backbone

    if not is_pretrained_name(cfg.model):
        return None
    listing = listing_of()
    if listing is None:
        return None
    if saved_image_size is not None:
        return Choice(int(saved_image_size), "the size this run started with")
    side = median_short_side(listing.root, listing.ids)
    native = min(default_input_size(resolve_name(cfg.model)))
    share = max(0.05, 1 - cfg.val_frac - cfg.test_frac) * cfg.fraction
    timer = epoch_timer(cfg.model, max(1, int(len(listing.ids) * share)), len(set(listing.labels)), device_of())
    return choose(side, native, cfg.train.budget_seconds, timer)
