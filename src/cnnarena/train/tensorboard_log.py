"""TensorBoard event files in the run directory, so `tensorboard --logdir runs` (or a study directory) shows every
run side by side: per-epoch scalars while it trains, then its hyper-parameters with its final metrics (the
HParams tab), the training curves and the confusion matrix.

Each epoch's row is written as history.csv has it. A resumed run, or the second phase of a fine-tune, opens a new
event file, named to be read after the earlier ones, that starts by purging every earlier epoch (purge_step=1)
and writing the history again, so the curves never show an epoch twice, whatever moment a kill interrupted.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

# final metrics.json keys -> their tags (the HParams tab's metric columns)
FINAL_METRICS = {"test_accuracy": "test/accuracy", "macro_f1": "test/macro_f1", "test_loss": "test/loss",
                 "best_val_accuracy": "val/best_accuracy", "train_seconds": "time/train_seconds",
                 "epochs_run": "time/epochs_run"}
EVENT_FILE_SECOND = re.compile(r"events\.out\.tfevents\.(\d+)\.")
IMAGES = {"plots/curves.png": "plots/training_curves", "plots/confusion_matrix.png": "plots/confusion_matrix"}


def scalar_tag(key: str) -> str:
    """history.csv's column -> its tag: train_/val_ pairs share a chart (loss/train beside loss/val)."""
    for side in ("train", "val"):
        if key.startswith(side + "_"):
            return f"{key[len(side) + 1:]}/{side}"
    return {"lr": "lr", "images_per_second": "speed/images_per_second"}.get(key, f"time/{key}")


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of one history row, by tag (not the epoch number, which is the step, nor the phase name)."""
    return {scalar_tag(k): float(v) for k, v in row.items()
            if k not in ("epoch", "phase") and isinstance(v, int | float) and not isinstance(v, bool)}


def writer_for(run_dir: Path, **kwargs):
    """A SummaryWriter whose new event file is read after the run's earlier ones (see wait_to_sort_last)."""
    from torch.utils.tensorboard import SummaryWriter

    wait_to_sort_last(Path(run_dir))
    return SummaryWriter(log_dir=str(run_dir), **kwargs)


def wait_to_sort_last(run_dir: Path, clock=time.time, sleep=time.sleep) -> float:
    """Sleep into the next second if an event file of this run was created in this one; returns the seconds slept.

    TensorBoard reads a directory's event files in name order, and a name is the creation second, then the host,
    pid and a counter compared as text (pid 2345 sorts after 12345, counter 10 before 9). A file that sorts before
    an older one is read first, and the older one's purge at step 1 then erases the newer one's epochs. A file
    from a later second always sorts last. Only runs shorter than a second ever wait; a file stamped further ahead
    than a second (a clock set back) is not waited for.
    """
    seconds = [int(m.group(1)) for f in run_dir.glob("events.out.tfevents.*")
               if (m := EVENT_FILE_SECOND.match(f.name))]
    now = clock()
    if not seconds or not 0 <= max(seconds) - int(now) <= 1:
        return 0.0
    wait = max(seconds) + 1 - now
    sleep(wait)
    return wait


def hparams_of(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """A run config as TensorBoard hyper-parameters: flat keys (train.lr), scalars, None and lists as text."""
    from ..rundir import flatten_settings

    return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in flatten_settings(config).items()}


def log_final(run_dir: Path, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The finished run's hyper-parameters and final metrics (HParams), and its plots as images."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard.summary import hparams

    run_dir = Path(run_dir)
    step = int(metrics.get("epochs_run") or 0)
    final = {tag: float(metrics[key]) for key, tag in FINAL_METRICS.items() if metrics.get(key) is not None}
    writer = writer_for(run_dir)
    try:
        for summary in hparams(hparams_of(config), final):  # experiment, session start, session end
            writer.file_writer.add_summary(summary)
        for tag, value in final.items():
            writer.add_scalar(tag, value, global_step=step)
        for name, tag in IMAGES.items():
            path = run_dir / name
            if path.exists():
                with Image.open(path) as img:
                    writer.add_image(tag, np.asarray(img.convert("RGB")), global_step=step, dataformats="HWC")
    finally:
        writer.close()
