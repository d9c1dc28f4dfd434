"""The trunk cache of fine-tuning: run the frozen part of a backbone once, then train only what follows it.

A frozen backbone (phase 1), or the frozen trunk in front of the last K unfrozen stages (phase 2), gives the same
output every epoch, so it is computed once and the head (or the tail + head) trains on those activations. The
cache is exact or not used: the backbone must run its modules as a plain chain (checked numerically, in eval and
train mode), the cached part must give the same output in training as in eval mode (BatchNorm rule, dropout,
drop-path), and the activations must fit in memory. The loaders over the cache (features.py) draw the same
batches in the same order as the image loaders, so both paths train on identical batch sequences.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..data.loader import BatchLoader
from ..models.base import Classifier
from ..models.pretrained import apply_batchnorm_rule, feature_dim
from ..models.stages import pretrained_net
from .callbacks import Callback

if TYPE_CHECKING:
    from .loop import TrainState

CACHE_MEMORY_SHARE = 0.4  # of the memory available now: more than this and the slow path runs instead

Unit = tuple[str, nn.Module]


def backbone_chain(backbone: nn.Module, sample: torch.Tensor) -> list[Unit] | None:
    """The backbone as a list of modules whose composition is its forward (nn.Sequential flattened), or None.

    timm's CNNs (resnet, efficientnet, mobilenet, densenet, vgg, inception) and GoogLeNet run their
    children in registration order; that is checked on `sample` (normalised N×3×H×W, N >= 2) in eval and
    in train mode (same random numbers, buffers restored), so a model with another control flow (skips
    around children, functional dropout, unused children) is refused rather than computed wrongly.
    """
    units: list[Unit] = []

    def add(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Sequential):
                add(f"{prefix}{name}.", child)
            else:
                units.append((f"{prefix}{name}", child))

    add("", backbone)
    if not units:
        return None
    chain = lambda x: run_chain(units, x)  # noqa: E731
    for mode in (False, True):
        with _untouched(backbone):
            backbone.train(mode)
            if not _close(_seeded(chain, sample), _seeded(backbone, sample)):
                return None
    return units


def run_chain(units: Sequence[Unit], x: torch.Tensor) -> torch.Tensor:
    for _, module in units:
        x = module(x)
    return x


def is_constant_in_training(net: nn.Module, fn, sample: torch.Tensor) -> bool:
    """fn(sample) is the same with `net` in its training mode (its BN rule applied) as in eval mode: what
    a cache computed once in eval mode needs. Checked numerically, so functional dropout is caught too."""
    with _untouched(net):
        net.train(True)
        in_training = _seeded(fn, sample)
        net.eval()
        return _close(in_training, _seeded(fn, sample))


@contextmanager
def _untouched(root: nn.Module) -> Iterator[None]:
    """Restore every module's mode and every buffer (BN running statistics) afterwards."""
    modes = {m: m.training for m in root.modules()}
    state = {k: v.clone() for k, v in root.state_dict().items()}
    try:
        yield
    finally:
        root.load_state_dict(state)
        for m, mode in modes.items():
            m.training = mode


def _seeded(fn, x: torch.Tensor) -> torch.Tensor | None:
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            return fn(x)
        except (RuntimeError, ValueError, TypeError, IndexError):
            return None


def _close(got: torch.Tensor | None, want: torch.Tensor | None) -> bool:
    if got is None or want is None:
        return False
    if got.shape != want.shape and got.dim() > 2 and got.shape[2:].numel() == 1:
        got = got.flatten(1)  # a pooled N×C×1×1 that the model flattens functionally
    if got.shape != want.shape:
        return False
    scale = want.abs().max().item() + 1e-6
    return torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


def constant_prefix(units: Sequence[Unit]) -> int:
    """How many leading units give the same output for the same input all through training, in the current
    mode: no trainable parameter, no BatchNorm in training mode, no active dropout or drop-path."""
    for i, (_, unit) in enumerate(units):
        if any(p.requires_grad for p in unit.parameters()) or any(_varies(m) for m in unit.modules()):
            return i
    return len(units)


def _varies(module: nn.Module) -> bool:
    if not module.training:
        return False
    if isinstance(module, _BatchNorm):
        return True
    return isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0 or \
        float(getattr(module, "drop_prob", 0.0) or 0.0) > 0


# --- feature cache --------------------------------------------------------------------------------------------

def compute_features(model: Classifier, images_uint8: torch.Tensor, batch_size: int = 128,
                     device: str | torch.device = "cpu", units: Sequence[Unit] | None = None,
                     channels_last: bool = False) -> torch.Tensor:
    """Backbone features (N×feature_dim, float32, on the CPU) of uint8 N×C×H×W images, in eval mode.

    For phase 1 of transfer learning: with a frozen backbone its output never changes, so the head
    can be trained on these cached features. With `units` (a trunk of `backbone_chain`), the output of
    those units instead: the activations entering the first trainable stage of phase 2.
    The model is moved to `device` (in channels_last memory format when asked) and left there.
    Batches of about the training batch size run faster on a CPU than big ones (cache locality), and
    channels_last is 2-4x faster than contiguous for EfficientNet-Lite0 (measured at 32-96 px).
    """
    if images_uint8.dtype != torch.uint8:
        raise ValueError(f"compute_features expects uint8 images, got {images_uint8.dtype}")
    net = pretrained_net(model)
    body = net.backbone if units is None else (lambda x: run_chain(units, x))
    was_training = model.training
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=fmt)
    chunks = []
    with torch.inference_mode():
        for batch in _batches(images_uint8, batch_size):
            x = model.adapter(batch.to(device, non_blocking=True).float().div_(255))
            chunks.append(body(x.contiguous(memory_format=fmt)).float().cpu().contiguous())
    model.train(was_training)
    if not chunks:
        return torch.zeros(0, model.meta.extra.get("feature_dim", feature_dim(net.backbone)))
    return torch.cat(chunks).clone()  # outside inference mode: a normal tensor the head can train on


def _batches(images: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    for start in range(0, images.shape[0], batch_size):
        yield images[start:start + batch_size]


# --- when to cache, and what trains behind the cache ---------------------------------------------------------

def split_for_cache(model: Classifier, train_loader: BatchLoader,
                     val_loader: BatchLoader) -> tuple[list[Unit], list[Unit]] | str | None:
    """(trunk, tail) when caching the trunk is exact and fits in memory; a reason when not; None when the
    whole backbone trains (nothing to cache)."""
    net = model.net
    sample = sample_images(model, train_loader)
    chain = backbone_chain(net.backbone, sample)
    if chain is None:
        return f"'{model.meta.name}' does not run its modules in a plain chain"
    with _mode(net, True):
        cut = constant_prefix(chain)
    if cut == 0:
        return None
    if cut == len(chain):
        return "nothing in the backbone trains"
    trunk, tail = chain[:cut], chain[cut:]
    if not is_constant_in_training(net, lambda x: run_chain(trunk, x), sample):
        return "its output differs between training and eval mode"
    with torch.no_grad(), _mode(net, False):
        per_image = run_chain(trunk, sample[:1]).numel() * 4  # float32
    need = per_image * (train_loader.num_samples + val_loader.num_samples)
    budget = memory_budget(train_loader.device)
    if need > budget:
        return f"its activations need {need / 2**30:.1f} GiB, more than {budget / 2**30:.1f} GiB available"
    return trunk, tail


class TailNet(nn.Module):
    """The last units of a backbone chain + the head, sharing their modules with the real model."""

    def __init__(self, net: nn.Module, units: Sequence[Unit]) -> None:
        super().__init__()
        self.tail = nn.ModuleList(module for _, module in units)
        self.head = net.head
        self.bn_frozen = net.bn_frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.tail:
            x = module(x)
        return self.head(x.flatten(1) if x.dim() > 2 else x)

    def train(self, mode: bool = True) -> TailNet:
        super().train(mode)
        if mode:  # the same BatchNorm rule as PretrainedNet
            apply_batchnorm_rule(self.tail.modules(), self.bn_frozen)
        return self


@contextmanager
def _mode(net: nn.Module, training: bool) -> Iterator[None]:
    was = net.training
    net.train(training)
    try:
        yield
    finally:
        net.train(was)


def sample_images(model: Classifier, loader: BatchLoader, n: int = 4) -> torch.Tensor:
    """A few normalised training images at network resolution, for the exactness checks."""
    with torch.no_grad():
        return model.adapter(loader.images[:n].float().div(255))


def pass_batch(cfg) -> int:
    """Batch size of the one-off cache passes: small batches run faster on a CPU (cache locality; measured at
    64 px: 690 img/s at 32, 600 at 64, 500 at 128, 380 at 256), and the training batch size when smaller."""
    return min(cfg.batch_size, 64, cfg.eval_batch_size)  # the eval batch: what a memory plan allows


def memory_budget(device: torch.device) -> float:
    if device.type == "cuda":
        return CACHE_MEMORY_SHARE * torch.cuda.mem_get_info(device)[0]
    from ..machine import available_bytes

    available = available_bytes()
    return CACHE_MEMORY_SHARE * (available if available is not None else 4 * 2**30)


class ChargeCacheFill(Callback):
    """The one-off pass that filled a cache is training time too: charged to the first epoch this process
    trains (the one after the resume point when a killed run resumes and fills the cache again), before the
    other callbacks (history files, progress, time budget) see it."""

    def __init__(self, seconds: float, key: str) -> None:
        self.seconds, self.key, self.charged = seconds, key, False
        self.seconds_before_fit = seconds

    def on_epoch_end(self, s: TrainState) -> None:
        if self.charged:
            return
        self.charged = True
        row = s.history[-1]
        seen = row["images_per_second"] * row["epoch_seconds"]
        row["epoch_seconds"] = round(row["epoch_seconds"] + self.seconds, 3)
        row[self.key] = round(self.seconds, 3)
        row["images_per_second"] = round(seen / max(row["epoch_seconds"], 1e-9), 1)
        s.train_seconds += self.seconds
