"""Checkpoints: weights as safetensors + metadata as JSON, trainer state for resuming.

Every file is written to a temporary name and renamed, so a killed run never leaves a
half-written checkpoint behind: the previous one stays valid until the new one is complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..models.base import Classifier, ModelMeta


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(model: Classifier, path: Path, extra: dict[str, Any] | None = None) -> None:
    """path.safetensors (weights) + path.json (ModelMeta + extra)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _atomic(path.with_suffix(".safetensors"), lambda tmp: save_file(state, tmp))
    meta = {"model": model.meta.to_json(), **(extra or {})}
    _atomic(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))


def read_meta(path: Path) -> ModelMeta:
    path = Path(path).with_suffix(".json")
    try:
        return ModelMeta.from_json(json.loads(path.read_text())["model"])
    except FileNotFoundError:
        raise UserError(f"no model metadata at {path}: is this a cnnarena run directory?") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"corrupt model metadata {path}: {e}") from None


def load_weights(model: Classifier, path: Path) -> None:
    path = Path(path).with_suffix(".safetensors")
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise UserError(f"no weights at {path}") from None
    except (SafetensorError, OSError) as e:
        raise UserError(f"corrupt weights file {path}: {e}") from None
    model.load_state_dict(state)


def load_model(path: Path) -> Classifier:
    """Rebuild the architecture from the JSON metadata, then load the safetensors weights."""
    from ..models.registry import rebuild

    model = rebuild(read_meta(path))
    load_weights(model, path)
    return model.eval()


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights on the CPU that later training steps do not change."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_trainer_state(path: Path, state: dict[str, Any]) -> None:
    _atomic(Path(path), lambda tmp: torch.save(state, tmp))


def load_trainer_state(path: Path) -> dict[str, Any] | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt state means we cannot resume; say so rather than guess
        raise UserError(f"cannot resume: corrupt trainer state {path} ({e}); delete it to start over") from None


def load_resume_point(model: Classifier, checkpoints: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(trainer state, best weights) of an interrupted fit, with `model` left on its last weights;
    (None, None) when no epoch was checkpointed."""
    resume = load_trainer_state(Path(checkpoints) / "trainer_state.pt")
    if resume is None:
        return None, None
    if "weights" not in resume:  # an older checkpoint: the weights were only in separate files
        load_weights(model, Path(checkpoints) / "best")
        resume["best_weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        load_weights(model, Path(checkpoints) / "last")
    else:
        model.load_state_dict(resume["weights"])
    return resume, resume["best_weights"]
