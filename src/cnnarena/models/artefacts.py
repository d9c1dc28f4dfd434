"""A saved model: weights as safetensors + metadata as JSON (ModelMeta, and what was trainable at the end).

`save_model` records the final freeze state beside the architecture: which parameters were frozen and whether
BatchNorm kept its running statistics (`bn_frozen`). `load_model` re-applies it, so a loaded fine-tuned model
is the model as it ended training (what the study measures), with nothing re-derived from the run's config.
Both files are written atomically: a killed run never leaves half a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..files import atomic_write, atomic_write_text
from .base import Classifier, ModelMeta


def freeze_state(model: Classifier) -> dict[str, Any]:
    """What is trainable now: the frozen parameters by name, and the BatchNorm mode of a pretrained net."""
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    return {"frozen": frozen, "bn_frozen": bool(getattr(model.net, "bn_frozen", False))}


def apply_freeze_state(model: Classifier, state: dict[str, Any]) -> None:
    frozen = set(state.get("frozen", ()))
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    if hasattr(model.net, "bn_frozen"):
        model.net.bn_frozen = bool(state.get("bn_frozen", False))
    model.train(model.training)  # a pretrained net re-applies its BatchNorm rule to the new state


def save_model(model: Classifier, path: Path, extra: dict[str, Any] | None = None) -> None:
    """path.safetensors (weights) + path.json (ModelMeta, freeze state, extra)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path.with_suffix(".safetensors"), lambda tmp: save_file(state, tmp))
    meta = {"model": model.meta.to_json(), "freeze": freeze_state(model), **(extra or {})}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))


def _read_json(path: Path) -> dict[str, Any]:
    path = Path(path).with_suffix(".json")
    try:
        saved = json.loads(path.read_text())
        ModelMeta.from_json(saved["model"])
        return saved
    except FileNotFoundError:
        raise UserError(f"no model metadata at {path}: is this a cnnarena run directory?") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"corrupt model metadata {path}: {e}") from None


def read_meta(path: Path) -> ModelMeta:
    """The checked ModelMeta of a saved model (RUN_DIR/model, checkpoints/best, or a run directory)."""
    from .. import rundir

    if Path(path).is_dir():
        path = Path(path) / rundir.MODEL
    return ModelMeta.from_json(_read_json(path)["model"])


def saved_freeze_state(path: Path) -> dict[str, Any] | None:
    """The freeze state model.json recorded, or None for a model saved before cnnarena recorded it."""
    return _read_json(path).get("freeze")


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
    """Rebuild the architecture from the JSON metadata, load the safetensors weights, re-apply the freeze state
    (models saved before it was recorded come back with every parameter trainable). In eval mode, with its conv
    weights channels-last as training left them: oneDNN then runs the convolutions in that layout, faster than
    NCHW on a CPU (benchmarks/results/loaded_layout.json). The weights file and the exports do not change.

    path: the stem of model.safetensors + model.json (RUN_DIR/model, checkpoints/best), or a run directory."""
    from .. import rundir
    from .registry import rebuild

    if Path(path).is_dir():
        path = Path(path) / rundir.MODEL
    saved = _read_json(path)
    model = rebuild(ModelMeta.from_json(saved["model"]))
    load_weights(model, path)
    if "freeze" in saved:
        apply_freeze_state(model, saved["freeze"])
    return model.to(memory_format=torch.channels_last).eval()
