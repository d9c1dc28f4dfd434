"""`cnnarena study DATA --curation FILE --compare-curation`: does the curation help?

The same models train twice on one split: on the data as given (OUT/as-given, an ordinary study) and as curated
(OUT, the main study). The split is cut once from the data as given; the curated runs use it without the images
the curation left out. Both are tested on the same images with the same labels, the curated test images (a
relabel is the user's correction of the truth), so the difference comes from the training data alone.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import rundir
from ..data.sources import load_data
from ..data.split import write_manifest
from ..errors import UserError
from ..run import new_split, tell
from .config import StudyConfig, resolve_data, run_config
from .stats import mcnemar_exact

AS_GIVEN = "as-given"


def as_given(study: StudyConfig) -> StudyConfig:
    common = {k: v for k, v in study.common.items() if k != "curation"}
    return dataclasses.replace(study, common=common, compare_curation=False, out=str(Path(study.out) / AS_GIVEN))


def run_compared(study: StudyConfig, run: Callable[[StudyConfig], dict[str, Any]]) -> dict[str, Any]:
    """Both studies (`run` trains one and writes its report), then the difference, added to the main report."""
    given = as_given(study)  # build_study_config refused --compare-curation without --curation
    _shared_split(study, given)
    given_comparison = run(given)
    comparison = run(study)
    comparison["curation_comparison"] = difference(comparison, given_comparison)
    comparison["verdict"] = [*comparison["verdict"], *lines(comparison)]
    return comparison


def _shared_split(study: StudyConfig, given: StudyConfig) -> None:
    """OUT/split.json cut from the data as given, copied to OUT/as-given (kept when the study resumes)."""
    split_path = Path(study.out) / rundir.SPLIT
    if split_path.exists() and "curation" in json.loads(split_path.read_text()):
        raise UserError(f"{split_path} was cut from the curated data (this study ran with --curation before): "
                        "--compare-curation needs a split of the data as given; give a new --out")
    if not split_path.exists():
        data = resolve_data(study.data)
        probe = run_config(given, data, given.models[0], split_path)
        source = load_data(probe)
        split, groups, messages = new_split(probe, source)
        tell(messages)
        Path(study.out).mkdir(parents=True, exist_ok=True)
        write_manifest(split, split_path, source_name=source.name, seed=probe.split_seed, groups=groups)
    given_split = Path(given.out) / rundir.SPLIT
    if not given_split.exists():
        given_split.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(split_path, given_split)


def _predictions(run_dir: str) -> dict[str, tuple[str, str]]:
    with open(Path(run_dir) / rundir.PREDICTIONS, newline="") as f:
        return {row["id"]: (row["true"], row["predicted"]) for row in csv.DictReader(f)}


def difference(curated: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Per model: test accuracy of the runs trained as given and as curated, on the curated test images (seed 0,
    whole training set), and McNemar's exact test on the paired predictions."""
    given_runs = {r["model"]: r["run_dir"] for r in given["table"]}
    rows = []
    for row in curated["table"]:
        if row["model"] not in given_runs:
            continue
        truth = _predictions(row["run_dir"])  # the curated test set: its ids, its labels
        before = _predictions(given_runs[row["model"]])
        ids = sorted(truth)
        if not ids or not set(ids) <= set(before):
            raise UserError(f"{row['run_dir']} and {given_runs[row['model']]} were not tested on one split: "
                            "rerun the comparison into a new --out")
        right_after = [truth[i][1] == truth[i][0] for i in ids]
        right_before = [before[i][1] == truth[i][0] for i in ids]
        test = mcnemar_exact(right_after, right_before)
        rows.append({"model": row["model"], "test_images": len(ids),
                     "as_given": sum(right_before) / len(ids), "curated": sum(right_after) / len(ids),
                     "change": (sum(right_after) - sum(right_before)) / len(ids), "p_value": test["p_value"]})
    return {"rows": rows, "as_given_dir": AS_GIVEN,
            "method": "both tested on the curated test images (the same ids and labels); the split was cut once "
                      "from the data as given; McNemar's exact test on the paired predictions"}


def lines(comparison: dict[str, Any]) -> list[str]:
    """The findings' lines about the curation (the console and the report)."""
    found = comparison.get("curation_comparison")
    if not found:
        return []
    out = []
    for r in found["rows"]:
        out.append(f"{r['model']}: {100 * r['as_given']:.2f}% trained on the data as given, {100 * r['curated']:.2f}% "
                   f"trained as curated ({100 * r['change']:+.2f} points on {r['test_images']} curated test "
                   f"images, p = {r['p_value']:.3g})")
    return out
