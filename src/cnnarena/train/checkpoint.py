"""Trainer state for resuming: one atomic file with everything an interrupted fit needs to carry on exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..files import atomic_write
from ..models.artefacts import load_weights
from ..models.base import Classifier


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights on the CPU that later training steps do not change."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_trainer_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_trainer_state(path: Path) -> dict[str, Any] | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt state means we cannot resume; say so rather than guess
        raise UserError(f"cannot resume: corrupt trainer state {path} ({e}); delete it to start over") from None


def load_resume_point(model: Classifier, checkpoints: Path) -> dict[str, Any] | None:
    """The trainer state of an interrupted fit (its "best_weights" included), with `model` left on its last
    weights; None when no epoch was checkpointed."""
    resume = load_trainer_state(Path(checkpoints) / "trainer_state.pt")
    if resume is None:
        return None
    if "weights" not in resume:  # an older checkpoint: the weights were only in separate files
        load_weights(model, Path(checkpoints) / "best")
        resume["best_weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        load_weights(model, Path(checkpoints) / "last")
    else:
        model.load_state_dict(resume["weights"])
    return resume
