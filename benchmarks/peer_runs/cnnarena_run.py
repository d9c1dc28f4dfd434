"""cnnarena as its users run it: `cnnarena train ARGS...`, the whole command in this process, plus one callback.

The callback scores the official test set after every epoch (the recipe's TTA, mirror and shifts, as the final
evaluation does) and prints it for the race; its own time is reported, and taken out of the clock.
`python cnnarena_run.py DATA.npz train fashion-mnist --model fast --out DIR`
"""

import sys
from unittest import mock

import numpy as np
import torch
from protocol import Stopwatch, emit

from cnnarena import cli, run
from cnnarena.evaluate.inference import predict_logits
from cnnarena.train import callbacks, finetune


class TestEveryEpoch(callbacks.Callback):
    def __init__(self, npz: str) -> None:
        self.npz, self.images, self.labels = npz, None, None

    def on_epoch_end(self, s) -> None:
        with Stopwatch() as w:
            if self.images is None:
                with np.load(self.npz) as d:
                    self.images = torch.from_numpy(d["x_test"]).unsqueeze(1).contiguous()
                    self.labels = torch.from_numpy(d["y_test"]).long()
            tta = bool(getattr(s.cfg, "tta", False))
            shift = getattr(s.cfg, "tta_shift", 0) if tta else 0
            logits = predict_logits(s.model, self.images, tta=tta, shift=shift)
            acc = (logits.argmax(1) == self.labels).float().mean().item()
        emit(s.epoch, acc, w.seconds)


def main() -> None:
    clock = TestEveryEpoch(sys.argv[1])
    original = callbacks.standard_callbacks

    def with_clock(*args, **kwargs):
        return [*original(*args, **kwargs), clock]

    sys.argv = ["cnnarena", *sys.argv[2:]]
    with mock.patch.object(run, "standard_callbacks", with_clock), \
            mock.patch.object(finetune, "standard_callbacks", with_clock):
        cli.main()


if __name__ == "__main__":
    main()
