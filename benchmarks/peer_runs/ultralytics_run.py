"""Ultralytics YOLO classify as its users run it: `YOLO("yolo11n-cls.yaml").train(data=FOLDER, ...)`.

Run by benchmarks.peers with benchmarks/.venv-ultralytics's python. The model is built from its YAML (from
scratch: no weights can be fetched offline). The folder has train/ and test/ (the official test set, which
Ultralytics validates on when there is no val/); it validates after every epoch by default, and the time of that
validation (on_val_start to on_val_end) is reported and taken out of the clock. `time=` is Ultralytics' own
budget in hours: it fits the schedule to it. `python ultralytics_run.py FOLDER --hours 0.15 --imgsz 32 --batch 256`
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
    marks = {"val": 0.0, "epochs": 0}

    def val_start(validator):
        marks["t"] = time.perf_counter()

    def val_end(validator):
        marks["val"] += time.perf_counter() - marks.pop("t", time.perf_counter())

    def fit_end(trainer):
        if marks["epochs"] >= trainer.epoch + 1:  # final_eval fires this once more, for best.pt: not an epoch
            return
        marks["epochs"] = trainer.epoch + 1
        emit(trainer.epoch + 1, trainer.metrics.get("metrics/accuracy_top1", float("nan")), marks["val"])
        marks["val"] = 0.0

    model.add_callback("on_val_start", val_start)
    model.add_callback("on_val_end", val_end)
    model.add_callback("on_fit_epoch_end", fit_end)
    extra = {"time": a.hours} if a.hours else {}
    model.train(data=a.folder, epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, workers=a.workers, device="cpu",
                plots=False, amp=False, seed=0, deterministic=False, project="runs", name="cls", exist_ok=True,
                **extra)


if __name__ == "__main__":
    main()
