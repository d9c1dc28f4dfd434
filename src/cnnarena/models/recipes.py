"""Default training recipes per model family: what a model is trained with unless the user says otherwise.

A preset is an architecture plus how to train it; the reports' architectures keep the reports'
settings (Adam 1e-3), `fast` keeps the recipe it was tuned with, backbones fine-tune in two phases.
"""

from __future__ import annotations

from typing import Any

REPORT_STYLE = {"optimizer": "adam", "lr": 1e-3}

FAST = {
    "optimizer": "sgd", "nesterov": True, "momentum": 0.9, "lr": 0.2, "weight_decay": 5e-4, "batch_size": 256,
    "schedule": "onecycle", "label_smoothing": 0.1, "augment": "flip", "tta": True, "epochs": 8,
}

# The same recipe, for 18 epochs, with 2-px shifts added to the flips.
FAST_LARGE = {**FAST, "augment": "light", "epochs": 18}

TUNED = {"fast": FAST, "fast-large": FAST_LARGE}  # presets with a recipe of their own

PRETRAINED = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "freeze_epochs": 2, "epochs": 3}


def recipe_for(model: str) -> dict[str, Any]:
    from .custom import PRESETS

    if model in TUNED:
        return dict(TUNED[model])
    if model in PRESETS or model.endswith((".yaml", ".yml", ".json")):
        return dict(REPORT_STYLE)
    return dict(PRETRAINED)


def recipe_overrides() -> dict[str, dict[str, Any]]:
    """Each family's recipe as recipe_for gives it, by a name for --help; the first is the default model's
    (simple-2conv: the custom presets and layer-spec files), then each preset with a recipe of its own, then
    the pretrained backbones (every other model name)."""
    return {"presets": dict(REPORT_STYLE), **{name: dict(recipe) for name, recipe in TUNED.items()},
            "backbones": dict(PRETRAINED)}
