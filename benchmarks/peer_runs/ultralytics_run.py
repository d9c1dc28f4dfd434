"""Ultralytics YOLO classify as its users run it: `YOLO("yolo11n-cls.yaml").train(data=FOLDER, ...)`.

Run by benchmarks.peers with benchmarks/.venv-ultralytics's python. The model is built from its YAML (from
scratch: no weights can be fetched offline). The folder has train/ and val/ (the official test set); Ultralytics
validates after every epoch by default, and the time from the end of an epoch's training to the end of its
validation is reported and taken out of the clock. `time=` is Ultralytics' own budget in hours: it fits the
schedule to it. `python ultralytics_run.py FOLDER --hours 0.15 --imgsz 32 --batch 256`
"""

import argparse
import os
import time

os.environ.setdefault("YOLO_OFFLINE", "1")

from protocol import emit  # noqa: E402
from ultralytics import YOLO, settings  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--hours", type=float, default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--imgsz", type=int, default=32)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    settings.update({"sync": False})
    model = YOLO("yolo11n-cls.yaml")
    marks = {}

    def train_end(trainer):
        marks["t"] = time.perf_counter()

    def fit_end(trainer):
        acc = trainer.metrics.get("metrics/accuracy_top1", float("nan"))
        start = marks.pop("t", None)  # none when a time= stop cut the epoch short
        emit(trainer.epoch + 1, acc, time.perf_counter() - start if start else 0.0)

    model.add_callback("on_train_epoch_end", train_end)
    model.add_callback("on_fit_epoch_end", fit_end)
    extra = {"time": a.hours} if a.hours else {}
    model.train(data=a.folder, epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, workers=a.workers, device="cpu",
                plots=False, amp=False, seed=0, deterministic=False, project="runs", name="cls", exist_ok=True,
                **extra)


if __name__ == "__main__":
    main()
