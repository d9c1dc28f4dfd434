"""fastai as its users run it: a DataBlock over the class folders, a Learner, fit_one_cycle.

Run by benchmarks.peers with benchmarks/.venv-fastai's python. `--arch fast` is cnnarena's `fast` layers
written in plain PyTorch and trained from scratch (the same network, so the tools are compared);
`--arch resnet18` is `vision_learner(dls, resnet18)`, fastai's way to fine-tune ImageNet weights.
The test folder is fastai's validation set, which fastai scores after every epoch anyway; the time of that
validation is reported and taken out of the clock.
`python fastai_run.py FOLDER --arch fast --epochs 10 --batch-size 256 --lr 3e-3`
"""

import argparse
import time

from fastai.callback.core import Callback
from fastai.vision.all import (
    CategoryBlock,
    DataBlock,
    Flip,
    GrandparentSplitter,
    ImageBlock,
    Learner,
    PILImageBW,
    accuracy,
    get_image_files,
    nn,
    parent_label,
    resnet18,
    set_seed,
    vision_learner,
)
from protocol import emit


def fast_layers() -> nn.Sequential:
    """cnnarena's `fast` (src/cnnarena/models/custom.py) as plain layers: pools before BatchNorm + ReLU."""
    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), *([nn.MaxPool2d(2)] if pool else []), nn.BatchNorm2d(cout),
                nn.ReLU()]

    return nn.Sequential(
        *block(1, 32, True), *block(32, 32, False), *block(32, 32, True), *block(32, 64, False),
        *block(64, 64, True), nn.Flatten(), nn.Linear(64 * 3 * 3, 10),
    )


class TestEveryEpoch(Callback):
    order = 90  # after the Recorder has its metrics

    def before_validate(self):
        self.t0 = time.perf_counter()

    def after_validate(self):
        self.took = time.perf_counter() - self.t0

    def after_epoch(self):
        values = dict(zip(self.recorder.metric_names[1:-1], self.recorder.values[-1], strict=True))
        self.epochs = getattr(self, "epochs", 0) + 1  # fine_tune runs two fits: count across both
        emit(self.epochs, float(values["accuracy"]), self.took)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--arch", choices=("fast", "resnet18"), default="fast")
    p.add_argument("--epochs", type=int, default=10)  # as many as `fast` trains
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    a = p.parse_args()
    set_seed(0)
    block = ImageBlock(PILImageBW) if a.arch == "fast" else ImageBlock()
    dblock = DataBlock(blocks=(block, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                       splitter=GrandparentSplitter(train_name="train", valid_name="test"), batch_tfms=[Flip()])
    dls = dblock.dataloaders(a.folder, bs=a.batch_size)
    if a.arch == "fast":
        learn = Learner(dls, fast_layers(), metrics=accuracy, cbs=TestEveryEpoch())
    else:
        learn = vision_learner(dls, resnet18, metrics=accuracy, cbs=TestEveryEpoch())
    learn.fit_one_cycle(a.epochs, a.lr) if a.arch == "fast" else learn.fine_tune(a.epochs)
    learn.export("model.pkl")


if __name__ == "__main__":
    main()
