"""The models one can name, as a table: the custom presets, then the pretrained backbones (`cnnarena models`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import timm
import torch

from ..errors import UserError
from .pretrained import ALIASES, _create, default_input_size, feature_dim, resolve_name, weights_spec
from .weights import LITE0_TIMM_NAME, offline_source


def model_rows(pattern: str | None = None, everything: bool = False) -> list[dict[str, Any]]:
    """One dict per model: name, kind (custom / pretrained), timm name, parameters, input size, offline weights."""
    from .custom import PRESETS
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

    parts = [format_preset_table() + "\n"] if pattern is None else []
    rows = search_models(pattern, everything=everything)
    if not rows:
        raise UserError(f"no timm model matches {pattern!r}: try a shorter pattern, or `cnnarena models --all`")
    parts.append(format_model_table(rows))
    if any(row["params"] is None for row in rows):
        parts.append(f"({len(rows)} models: parameters are counted for at most 60 rows; narrow the pattern to see "
                     "them)")
    return "\n".join(parts)


# The backbones (needs timm: imported when a table of them is asked for).

def weights_available_offline(name: str) -> str | None:
    """Which offline source ('cache:PATH' or 'package:NAME') would provide weights, looking at files only."""
    return offline_source(weights_spec(resolve_name(name)))


def list_pretrained() -> list[dict[str, Any]]:
    """One row per alias for `cnnarena models`: built on the meta device, so it takes well under a second each."""
    return [_model_row(alias, arch) for alias, arch in ALIASES.items()]


MAX_ROWS_WITH_PARAMS = 60  # counting parameters builds each network (on the meta device): fine for a page


def search_models(pattern: str | None = None, everything: bool = False) -> list[dict[str, Any]]:
    """Rows for `cnnarena models [PATTERN] [--all]`: the aliases, plus timm models matching PATTERN
    (shell-style, case-insensitive, a plain word matches anywhere) or all of timm's models with --all.

    Parameters are counted only when at most MAX_ROWS_WITH_PARAMS rows match (else params is None).
    """
    if pattern is None and not everything:
        return list_pretrained()
    glob = _glob(pattern or "*")
    by_arch = {arch: alias for alias, arch in ALIASES.items()}
    names = [a for alias, a in ALIASES.items() if fnmatch.fnmatch(alias, glob) or fnmatch.fnmatch(a.lower(), glob)]
    names += [n for n in timm.list_models() if fnmatch.fnmatch(n.lower(), glob) and n not in names]
    with_params = len(names) <= MAX_ROWS_WITH_PARAMS
    return [_model_row(by_arch.get(n, ""), n, with_params) for n in names]


def _glob(pattern: str) -> str:
    pattern = pattern.strip().lower().replace("-", "_")
    return pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"


def _model_row(alias: str, arch: str, with_params: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = dict(alias=alias, timm_name=arch, params=None, feature_dim=None,
                               input_size=default_input_size(arch), offline_weights=offline_source(weights_spec(arch)))
    if with_params:
        with torch.device("meta"):
            backbone = _create(arch, {})
        row["params"] = sum(p.numel() for p in backbone.parameters())  # backbone only: the head is new
        row["feature_dim"] = feature_dim(backbone)
    spec = weights_spec(arch)
    row["published_weights"] = bool(spec.hf_hub_id or spec.url or arch == LITE0_TIMM_NAME)
    return row


def format_model_table(rows: Sequence[dict[str, Any]]) -> str:
    """alias | timm name | backbone params | default input | ImageNet weights offline (source)."""
    def weights(row: dict[str, Any]) -> str:
        source = row["offline_weights"]
        if source is not None:
            kind, _, where = source.partition(":")
            return f"yes ({kind} {where})"
        return "no (download once, or --weights FILE)" if row["published_weights"] else "no (none published)"

    table = [("alias", "timm name", "backbone params", "input", "offline ImageNet weights")]
    for row in rows:
        params = f"{row['params'] / 1e6:.1f}M" if row["params"] is not None else "-"
        h, w = row["input_size"]
        table.append((row["alias"] or "-", row["timm_name"], params, f"{h}x{w}", weights(row)))
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in table]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


# --- freezing ---------------------------------------------------------------------------------------------

