"""Re-evaluate a saved run: its best model on its own test split, or on another dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..config import build_config
from ..data.split import load_manifest, make_split
from ..errors import UserError
from ..train.checkpoint import load_model
from .inference import predict_logits
from .metrics import compute_metrics


def reevaluate(run_dir: Path, *, data: str | None = None, tta: bool = False) -> dict[str, Any]:
    from ..run import load_data

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir} is not a cnnarena run directory (no config.yaml)")
    model = load_model(run_dir / "model")
    cfg = build_config(yaml.safe_load((run_dir / "config.yaml").read_text()), {"data": data} if data else None,
                       use_recipe=False)
    source = load_data(cfg)
    if source.classes != model.meta.classes:
        raise UserError(f"{cfg.data} has classes {source.classes}, the model was trained on {model.meta.classes}")
    if data is None:
        test = load_manifest(run_dir / "split.json", source).test
    else:
        test = source.test if source.test is not None else make_split(source, seed=cfg.split_seed).test
    if tuple(test.size) != tuple(model.meta.data_size) or test.channels != model.meta.in_chans:
        raise UserError(f"data is {test.channels}×{test.size}, the model expects "
                        f"{model.meta.in_chans}×{tuple(model.meta.data_size)} (use the run's --image-size)")
    metrics = compute_metrics(predict_logits(model, test.images, tta=tta), test.labels, test.classes)
    metrics["evaluated_on"] = cfg.data
    (run_dir / "evaluation.json").write_text(json.dumps(metrics, indent=1))
    return metrics
