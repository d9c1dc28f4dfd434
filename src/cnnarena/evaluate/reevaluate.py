"""Re-evaluate a saved run: its best model on its own test split, or on another dataset.

Which images are evaluated:

- no `data`, or `data` naming the run's own dataset (the same spec as in its config.yaml):
  the test ids of the run's split.json, so the result is comparable with metrics.json and
  never includes an image the run trained or validated on;
- another dataset: its official test split when it has one, else all of its images (nothing
  of it was seen in training, so there is nothing to hold out).

Test-time augmentation follows the run's own `tta` setting unless `tta` says otherwise (with the run's own
`tta_shift` when on), so re-evaluating a run on its own split reproduces metrics.json's test accuracy.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .. import rundir
from ..config import build_config, load_saved, read_saved
from ..data.dataset import ImageSet, Source
from ..data.sources import BUILTIN
from ..data.split import load_manifest
from ..errors import UserError
from ..models.artefacts import load_model
from .inference import applied_shift
from .metrics import score_images

log = logging.getLogger(__name__)


def same_data(spec: str, run_spec: str) -> bool:
    """Whether a --data spec names the dataset a run was trained on: the same name, or the same path."""
    if spec == run_spec:
        return True
    if spec in BUILTIN or run_spec in BUILTIN:  # a name is never a path, even with a folder of that name here
        return False
    a, b = Path(spec).expanduser(), Path(run_spec).expanduser()
    if not (a.exists() and b.exists()):  # a path that is not here cannot be compared
        return False
    return a.resolve() == b.resolve()


def choose_test_set(source: Source, run_dir: Path, own_data: bool) -> tuple[ImageSet, str]:
    """The images to evaluate and a description of them (see the module docstring)."""
    if own_data:
        test = load_manifest(run_dir / rundir.SPLIT, source).test
        return test, f"the run's test split ({len(test)} images of split.json)"
    if source.test is not None:
        return source.test, f"the official test split of {source.name} ({len(source.test)} images)"
    return source.pool, f"all {len(source.pool)} images of {source.name} (it has no official test split)"


def _warn_if_seen(test: ImageSet, run_dir: Path) -> None:
    """Another dataset whose ids are those of the run's training/validation images is probably a copy of it."""
    try:
        manifest = json.loads((run_dir / rundir.SPLIT).read_text())
        seen = set(manifest["train"]) | set(manifest["val"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    shared = sum(sid in seen for sid in test.ids)
    if shared:
        log.warning(f"warning: {shared} of the {len(test)} evaluated images have the ids of images the run "
                    "trained or validated on; if this is a copy of the run's dataset, pass its original spec to "
                    "--data (or leave --data out) to evaluate on the run's test split")


def reevaluate(run_dir: Path, *, data: str | None = None, tta: bool | None = None) -> dict[str, Any]:
    """Metrics of a run's best model (also written to evaluation.json); `tta` None keeps the run's setting."""
    from ..data.sources import load_data

    run_dir = Path(run_dir)
    run_cfg = load_saved(run_dir)
    saved = read_saved(run_dir)
    model = load_model(run_dir / "model")
    own_data = data is None or same_data(data, run_cfg.data)
    cfg = run_cfg if own_data else build_config({**saved, "curation": None}, {"data": data},
                                                          use_recipe=False)  # the run's curation names its own ids
    source = load_data(cfg)
    if source.classes != model.meta.classes:
        raise UserError(f"{cfg.data} has classes {source.classes}, the model was trained on {model.meta.classes}")
    test, described = choose_test_set(source, run_dir, own_data)
    if tuple(test.size) != tuple(model.meta.data_size) or test.channels != model.meta.in_chans:
        raise UserError(f"data is {test.channels}×{test.size}, the model expects "
                        f"{model.meta.in_chans}×{tuple(model.meta.data_size)} (use the run's --image-size)")
    if not own_data:
        _warn_if_seen(test, run_dir)
    use_tta = cfg.train.tta if tta is None else tta
    shift = applied_shift(run_cfg.train.tta_shift, test.size) if use_tta else 0  # the shifts its training paid for
    metrics, _ = score_images(model, test.images, test.labels, test.classes, batch_size=cfg.train.eval_batch_size,
                              tta=use_tta, shift=shift)
    metrics.update({
        "evaluated_on": cfg.data,
        "test_set": described,
        "tta": use_tta,
        "tta_shift": shift,
        "tta_from": "the run's config" if tta is None else "the command line",
    })
    (run_dir / rundir.EVALUATION).write_text(json.dumps(metrics, indent=1))
    return metrics
