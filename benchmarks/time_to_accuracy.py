"""How long cnnarena's `fast` preset needs to reach a test accuracy, data loading included.

The run is cnnarena's own: build_config(model=fast) gives the recipe from models/recipes.py, and
train_run() does everything `cnnarena train` does (load and split the data, train with its callbacks,
checkpoints and history, final test evaluation, plots) into a temp dir. One callback is added to the
run's standard callbacks: after every epoch it measures accuracy on the official test set the way the
run's final evaluation does (flip TTA when the recipe says so). Its own time is taken out of the clock,
so the time to an accuracy is: from calling train_run to the end of the first epoch that reaches it,
plus that one evaluation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from unittest import mock

from cnnarena import run as run_module
from cnnarena.config import build_config
from cnnarena.data.dataset import ImageSet
from cnnarena.evaluate.inference import predict_logits
from cnnarena.models.recipes import recipe_for
from cnnarena.train.callbacks import Callback


class EpochTestClock(Callback):
    """Test accuracy after every epoch, with the wall time since `t0` (its own evaluations excluded)."""

    def __init__(self, test: ImageSet, t0: float, tta: bool, log=lambda m: None, shift: int = 0) -> None:
        self.test, self.t0, self.tta, self.log, self.shift = test, t0, tta, log, shift
        self.excluded = 0.0
        self.curve: list[dict[str, Any]] = []

    def on_epoch_end(self, s) -> None:
        t = time.perf_counter()
        elapsed = t - self.t0 - self.excluded
        logits = predict_logits(s.model, self.test.images, batch_size=1024, tta=self.tta, shift=self.shift)
        acc = (logits.argmax(1) == self.test.labels).float().mean().item()
        took = time.perf_counter() - t
        self.excluded += took
        self.curve.append({"epoch": s.epoch, "seconds": round(elapsed + took, 2), "test_accuracy": round(acc, 5)})
        self.log(f"cnnarena fast: epoch {s.epoch}/{s.cfg.epochs}  test acc {acc:.4f}  {elapsed + took:.0f} s")


def run_fast(test: ImageSet, workdir: Path, *, data: str = "fashion-mnist", data_dir: str | None = None,
             val_frac: float = 0.05, epochs: int | None = None, model: str = "fast",
             log=lambda m: None) -> dict[str, Any]:
    """Train `model` (`fast` or `fast-large`) with its recipe (epochs optionally capped); the curve and totals."""
    recipe = recipe_for(model)
    values: dict[str, Any] = {"data": data, "data_dir": data_dir, "model": model, "val_frac": val_frac,
                              "device": "cpu"}
    if epochs is not None and epochs < recipe["epochs"]:
        values["epochs"] = epochs  # a shorter one-cycle schedule: the whole recipe, squeezed
    cfg = build_config(None, values)
    from cnnarena.data.sources import _cached_source

    _cached_source.cache_clear()  # loading the data is part of the time
    original = run_module.standard_callbacks
    t0 = time.perf_counter()
    clock = EpochTestClock(test, t0, cfg.train.tta, log, shift=cfg.train.tta_shift)

    def with_clock(*args, **kwargs):
        return [*original(*args, **kwargs), clock]

    with mock.patch.object(run_module, "standard_callbacks", with_clock):
        metrics = run_module.train_run(cfg, Path(workdir) / model)
    wall = time.perf_counter() - t0 - clock.excluded
    return {"model": model, "recipe": {k: v for k, v in recipe.items()}, "epochs": cfg.train.epochs,
            "recipe_epochs": recipe["epochs"], "capped": cfg.train.epochs < recipe["epochs"],
            "val_frac": val_frac, "train_images": metrics.get("train_samples"),
            "curve": clock.curve, "final_test_accuracy": metrics["test_accuracy"],
            "wall_seconds": round(wall, 2), "data_seconds": metrics.get("data_seconds"),
            "train_seconds": metrics.get("train_seconds")}

