"""The models one can name, as a table: the custom presets, then the pretrained backbones (`cnnarena models`)."""

from __future__ import annotations

from typing import Any

from ..errors import UserError


def model_rows(pattern: str | None = None, everything: bool = False) -> list[dict[str, Any]]:
    """One dict per model: name, kind (custom / pretrained), timm name, parameters, input size, offline weights."""
    from .custom import PRESETS
    from .pretrained import search_models

    rows: list[dict[str, Any]] = []
    if pattern is None:
        rows += [{"name": name, "kind": "custom", "timm_name": None, "params": None, "input_size": None,
                  "offline_weights": None, "layers": len(spec)} for name, spec in PRESETS.items()]
    found = search_models(pattern, everything=everything)
    if not found and pattern is not None:
        raise UserError(f"no timm model matches {pattern!r}: try a shorter pattern, or `cnnarena models --all`")
    rows += [{"name": row["alias"] or row["timm_name"], "kind": "pretrained", **row} for row in found]
    return rows


def model_frame(pattern: str | None = None, everything: bool = False):
    import pandas as pd

    return pd.DataFrame(model_rows(pattern, everything))


def model_text(pattern: str | None = None, everything: bool = False) -> str:
    """The tables `cnnarena models` prints."""
    from .custom import format_preset_table
    from .pretrained import format_model_table, search_models

    parts = [format_preset_table() + "\n"] if pattern is None else []
    rows = search_models(pattern, everything=everything)
    if not rows:
        raise UserError(f"no timm model matches {pattern!r}: try a shorter pattern, or `cnnarena models --all`")
    parts.append(format_model_table(rows))
    if any(row["params"] is None for row in rows):
        parts.append(f"({len(rows)} models: parameters are counted for at most 60 rows; narrow the pattern to see "
                     "them)")
    return "\n".join(parts)
