"""Throughput measured side by side: training and inference images/s of one network, several implementations.

Every implementation is a *runner*: `run(steps)` does exactly `steps` steps (a training step, or one
inference call on a batch) and returns (images processed, seconds). The scheduler warms each runner up,
fixes its step count from the warm-up speed so one round lasts about seconds/rounds, then runs the
rounds interleaved (A B C, B C A, C A B): a burst of load from another process on a shared machine
then hits every implementation instead of whichever happened to be running. The figure is the median
of the rounds.

Runners here (cnnarena's venv): cnnarena's real training path (BatchLoader + fit), a plain PyTorch
loop (DataLoader over a TensorDataset of float tensors, default layout, Adam), PyTorch eager and ONNX
Runtime inference. The Keras runners live in keras_peer.py and run in their own venv. cnnarena's fit()
raises glibc's malloc thresholds process-wide (cnnarena/memory.py), so the plain loop, which runs in this same
process, is spared the page faults too: its figure is, if anything, better than a plain script's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnarena.config import build_config
from cnnarena.data.augment import build_augment
from cnnarena.data.dataset import ImageSet
from cnnarena.data.loader import BatchLoader
from cnnarena.models.base import Classifier, count_parameters
from cnnarena.models.registry import create_model
from cnnarena.train.loop import fit

MODEL = "simple-2conv"  # the reports' network: conv32-BN-ReLU-pool, conv64-BN-ReLU-pool, 128, 64, classes
PARAMS = 429_450  # its trainable parameters on 1×28×28 inputs, 10 classes (Keras counts the same)


class Runner(Protocol):
    name: str
    batch: int

    def run(self, steps: int) -> tuple[int, float]:
        """Do exactly `steps` steps; (images processed, seconds taken)."""
        ...


@dataclass
class Measured:
    """One runner's result: images/s per round and their median; or why it was not measured."""

    name: str
    batch: int
    steps: int = 0  # per round
    rates: list[float] = field(default_factory=list)
    seconds: float = 0.0  # measured, all rounds together
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float | None:
        return statistics.median(self.rates) if self.rates and self.error is None else None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"not_measured": self.error, **self.extra}
        return {"images_per_second": round(self.images_per_second, 1), "rounds": [round(r, 1) for r in self.rates],
                "steps_per_round": self.steps, "batch_size": self.batch, "measured_seconds": round(self.seconds, 2),
                **self.extra}


def warm_up(runner: Runner, probe_seconds: float) -> float:
    """Run until one probe of doubling length takes probe_seconds; seconds per step of the last probe.

    The first probes absorb one-time costs (tracing, kernel selection, allocator growth).
    """
    steps, probes = 1, 0
    while True:
        images, seconds = runner.run(steps)
        probes += 1
        if probes >= 2 and (seconds >= probe_seconds or steps >= 4096):
            return seconds / steps
        steps *= 2


def side_by_side(runners: list[Runner], *, seconds: float, rounds: int, min_steps: int = 10,
                 log: Callable[[str], None] = lambda m: None) -> list[Measured]:
    """Warm each runner up, fix its steps per round, then run the rounds interleaved."""
    per_round = seconds / max(1, rounds)
    results = [Measured(r.name, r.batch) for r in runners]
    for runner, res in zip(runners, results, strict=True):
        try:
            step_seconds = warm_up(runner, probe_seconds=min(1.0, per_round / 3))
        except Exception as e:  # a peer that cannot run is reported, never faked
            res.error = _reason(e)
            log(f"  {runner.name} b={runner.batch}: not measured: {res.error}")
            continue
        res.steps = max(min_steps, round(per_round / max(step_seconds, 1e-9)))
    for k in range(rounds):
        order = [(runners[i], results[i]) for i in range(len(runners))]
        order = order[k % len(order):] + order[:k % len(order)]
        for runner, res in order:
            if res.error is not None:
                continue
            try:
                images, took = runner.run(res.steps)
            except Exception as e:
                res.error = _reason(e)
                log(f"  {runner.name} b={runner.batch}: not measured: {res.error}")
                continue
            res.rates.append(images / took)
            res.seconds += took
            log(f"  {runner.name} b={runner.batch} round {k + 1}/{rounds}: {images / took:,.0f} img/s "
                f"({res.steps} steps, {took:.1f} s)")
    return results


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}".rstrip(": ")


def _window(n_total: int, start: int, n: int) -> torch.Tensor:
    """Indices start, start+1, ... (n of them), wrapping around: repeats the data when n > n_total."""
    return (torch.arange(n) + start) % n_total


# --------------------------------------------------------------------------------------------- training


class CnnarenaTrain:
    """cnnarena's own path: the run config's recipe for simple-2conv (Adam 1e-3, channels_last as configured),
    a BatchLoader over the uint8 tensor (shuffled, scaled per batch) and fit() for one epoch of exactly
    `steps` batches. The time is fit's own epoch timer (what `cnnarena train` reports as img/s); fit's
    validation pass and best-weights copy after the epoch are not in it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str], batch: int,
                 name: str = "cnnarena") -> None:
        self.name, self.batch = name, batch
        self.images, self.labels, self.classes = images, labels, classes
        self.cfg = build_config(None, {"model": MODEL, "batch_size": batch, "epochs": 1, "device": "cpu"}).train
        torch.manual_seed(0)
        self.model = create_model(MODEL, num_classes=len(classes), in_chans=images.shape[1],
                                  data_size=tuple(images.shape[2:]), classes=classes)
        self.augment = build_augment(self.cfg.augment)
        self.val = BatchLoader(self._subset(torch.arange(min(256, len(images)))), 256)
        self.offset = 0

    def _subset(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.classes, [str(i) for i in range(len(index))])

    def run(self, steps: int) -> tuple[int, float]:
        n = steps * self.batch
        data = self._subset(_window(len(self.images), self.offset, n))
        self.offset = (self.offset + n) % len(self.images)
        loader = BatchLoader(data, self.batch, device="cpu", shuffle=True, augment=self.augment,
                             seed=self.offset, channels_last=self.cfg.channels_last)
        state = fit(self.model, loader, self.val, self.cfg)
        row = state.history[-1]
        return n, n / row["images_per_second"]


def plain_simple_2conv(in_chans: int = 1, num_classes: int = 10, side: int = 28) -> nn.Sequential:
    """simple-2conv written the way a PyTorch tutorial would write it (default init, default layout)."""
    flat = 64 * (side // 4) * (side // 4)
    return nn.Sequential(
        nn.Conv2d(in_chans, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


class PlainTorchTrain:
    """The plain PyTorch loop: float tensors in a TensorDataset, DataLoader(shuffle=True) with its defaults
    (no workers), contiguous NCHW, Adam 1e-3, zero_grad / forward / loss / backward / step, loss.item()."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, batch: int,
                 name: str = "plain PyTorch") -> None:
        from torch.utils.data import DataLoader, TensorDataset

        self.name, self.batch = name, batch
        x = images.float() / 255.0
        self.loader = DataLoader(TensorDataset(x, labels), batch_size=batch, shuffle=True)
        torch.manual_seed(0)
        self.model = plain_simple_2conv(images.shape[1], num_classes, images.shape[2])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.batches = self._forever()
        self.running_loss = 0.0

    def _forever(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self.loader

    def run(self, steps: int) -> tuple[int, float]:
        model, opt = self.model, self.optimizer
        model.train()
        images = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = next(self.batches)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            self.running_loss += loss.item()
            images += y.shape[0]
        return images, time.perf_counter() - t0


# -------------------------------------------------------------------------------------------- inference


def inference_model(images: torch.Tensor, classes: list[str], trained: Classifier | None = None) -> Classifier:
    """simple-2conv as cnnarena loads it for prediction: default (contiguous) layout, eval mode, CPU."""
    model = create_model(MODEL, num_classes=len(classes), in_chans=images.shape[1],
                         data_size=tuple(images.shape[2:]), classes=classes)
    if trained is not None:
        model.load_state_dict({k: v.contiguous() for k, v in trained.state_dict().items()})
    return model.cpu().eval()


class TorchEagerInfer:
    """One call = model(x) in inference mode on a float [0,1] N×C×H×W batch (what `predict` and the torch
    serving backend run after scaling the decoded pixels)."""

    def __init__(self, model: Classifier, batch_images: torch.Tensor, name: str = "cnnarena PyTorch eager") -> None:
        self.name, self.batch, self.model = name, batch_images.shape[0], model
        self.x = batch_images.float().div(255.0)

    def run(self, steps: int) -> tuple[int, float]:
        with torch.inference_mode():
            t0 = time.perf_counter()
            for _ in range(steps):
                self.model(self.x)
            return steps * self.batch, time.perf_counter() - t0


def export_onnx_file(model: Classifier, path: Path) -> dict[str, Any]:
    """torch.onnx.export (TorchScript exporter, symbolic batch axis, as `cnnarena export` does); checks
    that ONNX Runtime reproduces PyTorch's logits."""
    import warnings

    import onnxruntime as ort

    meta = model.meta
    example = torch.rand(2, meta.in_chans, *meta.data_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["images"],
                          output_names=["logits"], opset_version=17, do_constant_folding=True,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(7, meta.in_chans, *meta.data_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(x).numpy()
    got = session.run(["logits"], {"images": x.numpy()})[0]
    return {"max_abs_diff_vs_torch": float(np.abs(got - expected).max()), "onnxruntime": ort.__version__,
            "opset": 17}


class OnnxInfer:
    """One call = session.run on a float [0,1] batch; ONNX Runtime CPUExecutionProvider, default options
    (threads: ORT's default, one per physical core, unless --threads)."""

    def __init__(self, onnx_path: Path, batch_images: torch.Tensor, name: str = "cnnarena ONNX Runtime",
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.name, self.batch = name, batch_images.shape[0]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.x = np.ascontiguousarray(batch_images.float().div(255.0).numpy())

    def run(self, steps: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.session.run(["logits"], {"images": self.x})
        return steps * self.batch, time.perf_counter() - t0


def param_counts(images: torch.Tensor, classes: list[str]) -> dict[str, int]:
    """Trainable parameters of both PyTorch versions of the network (each must be PARAMS)."""
    model = create_model(MODEL, num_classes=len(classes), in_chans=images.shape[1],
                         data_size=tuple(images.shape[2:]), classes=classes)
    plain = plain_simple_2conv(images.shape[1], len(classes), images.shape[2])
    return {"cnnarena": count_parameters(model)[1], "plain PyTorch": count_parameters(plain)[1]}
