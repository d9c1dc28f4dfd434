"""The one owner of a run or study directory: its layout and file names, its state, and its readers.

A run directory:                              A study directory:
    config.yaml     the resolved options          study.yaml       what the study is
    split.json      the split manifest            split.json       the split every run shares
    history.jsonl   one row per epoch (+ .csv)    lr/MODEL/lr=X/   the learning-rate comparison's runs
    checkpoints/    resume points                 runs/MODEL/f=F-s=S/  the compared runs
    model.safetensors + model.json                comparison.json (+ .md, .csv), report.html
    metrics.json    written last: the run is finished
    predictions.csv, plots/, evaluation.json, tensorboard event files, .lock (one writer)

Every other module names these files through this one, and asks it what a directory holds before writing into it:
a folder of the user's that is neither empty nor cnnarena's is refused, never overwritten.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

from .errors import UserError
from .writer_lock import sole_writer

__all__ = ["sole_writer"]

CONFIG = "config.yaml"
SPLIT = "split.json"
HISTORY = "history.jsonl"
HISTORY_CSV = "history.csv"
CHECKPOINTS = "checkpoints"
MODEL = "model"  # the stem of model.safetensors and model.json
MODEL_WEIGHTS = "model.safetensors"
MODEL_META = "model.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
PLOTS = "plots"
EVALUATION = "evaluation.json"
STUDY = "study.yaml"
COMPARISON = "comparison.json"
COMPARISON_MD = "comparison.md"
COMPARISON_CSV = "comparison.csv"
REPORT = "report.html"
LOCK = ".lock"

# What cnnarena may find in a directory it is about to write: its own files, and what a user's tools leave.
_HARMLESS = {LOCK, ".DS_Store", ".ipynb_checkpoints", "Thumbs.db", ".gitkeep"}


class State(enum.Enum):
    NEW = "new"  # missing or empty: a run may start here
    PARTIAL = "partly trained"  # a cnnarena run that has not finished: it resumes
    FINISHED = "finished"  # metrics.json is there: reused as it is
    STUDY = "a study"  # a cnnarena study directory
    FOREIGN = "not a cnnarena directory"  # the user's own files: never written into


def _yaml_mapping(path: Path) -> dict | None:
    import yaml

    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return value if isinstance(value, dict) else None


def is_run_config(path: Path) -> bool:
    """A config.yaml cnnarena wrote (any version): a mapping with the data, the model and its training options."""
    saved = _yaml_mapping(path) if path.is_file() else None
    return saved is not None and {"data", "model"} <= saved.keys() and isinstance(saved.get("train"), dict)


def is_study_file(path: Path) -> bool:
    """A study.yaml cnnarena wrote: the resolved study, with the per-model overrides a user's own file lacks."""
    saved = _yaml_mapping(path) if path.is_file() else None
    return saved is not None and {"data", "models", "overrides", "common"} <= saved.keys()


def state(directory: str | Path) -> State:
    """What `directory` holds, from its files: never guessed from one file alone."""
    d = Path(directory)
    if not d.exists() or (d.is_dir() and all(p.name in _HARMLESS for p in d.iterdir())):
        return State.NEW
    if not d.is_dir():
        return State.FOREIGN
    if is_study_file(d / STUDY):
        return State.STUDY
    if is_run_config(d / CONFIG):
        finished = (d / METRICS).is_file() and (d / MODEL_WEIGHTS).is_file()
        return State.FINISHED if finished else State.PARTIAL
    return State.FOREIGN


def check_out(directory: str | Path, kind: str = "run", option: str = "--out") -> Path:
    """Refuse, in one line and before anything is written, a directory a `kind` ("run" or "study") must not write:
    a file, the file system's root or the home folder, or a folder of the user's own that is not empty."""
    d = Path(directory).expanduser()
    resolved = d.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise UserError(f"{option} {directory}: refusing to write a {kind} into {resolved} itself; give a new "
                        f"folder, e.g. {d / ('my-' + kind)}")
    if d.exists() and not d.is_dir():
        raise UserError(f"{option} {directory} is a file, not a directory: give a new or existing directory")
    check_parents(d, option)
    found = state(d)
    wanted = {State.STUDY} if kind == "study" else {State.PARTIAL, State.FINISHED}
    if found is State.NEW or found in wanted:
        return d
    what = "a cnnarena study" if found is State.STUDY else "a cnnarena run" if found in (
        State.PARTIAL, State.FINISHED) else "files that are not a cnnarena " + kind
    raise UserError(f"{option} {directory} already holds {what}: give a new or empty folder (nothing was "
                    "written)")


def default_run_dir(data: str, model: str) -> Path:
    """runs/DATA-MODEL-TIME: a new directory for every run that is not given one."""
    from datetime import datetime

    return Path("runs") / f"{Path(data).name or 'data'}-{Path(model).stem}-{datetime.now():%Y%m%d-%H%M%S}"


def check_parents(path: Path, option: str) -> None:
    """The nearest existing parent of `path` must be a directory."""
    for parent in Path(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {path}: {parent} is a file, not a directory")
            return


def check_run(directory: str | Path) -> Path:
    """A finished run to read from (predict, evaluate, explain, export, serve), or one UserError saying why not."""
    d = Path(directory)
    if not d.exists():
        raise UserError(f"run directory {directory} does not exist")
    if not d.is_dir():
        raise UserError(f"{directory} is a file, not a run directory")
    if not (d / MODEL_META).is_file() or not (d / MODEL_WEIGHTS).is_file():
        found = state(d)
        why = "it has not finished training" if found is State.PARTIAL else (
            "it is a study: pick one of its runs, e.g. the winner" if found is State.STUDY else
            f"no {MODEL_WEIGHTS} and {MODEL_META}")
        raise UserError(f"{directory} is not a finished cnnarena run: {why}")
    return d


def has_trained(run_dir: Path) -> bool:
    """Whether run_dir holds anything worth resuming or protecting: a finished epoch or a finished run."""
    d = Path(run_dir)
    history = d / HISTORY
    return ((history.exists() and history.stat().st_size > 0) or (d / METRICS).exists()
            or (d / CHECKPOINTS / "phase1.json").exists())


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"no {what} at {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"cannot read {what} {path}: {str(e).splitlines()[0][:120]}") from None


# what every reader of a finished run relies on (the study table, evaluate, the API), with its type
METRICS_NEEDS = {"test_accuracy": float, "macro_precision": float, "macro_recall": float, "macro_f1": float,
                 "weighted_precision": float, "weighted_recall": float, "weighted_f1": float, "test_loss": float,
                 "train_seconds": float, "epochs_run": int, "params_total": int, "model_file_bytes": int,
                 "per_class": dict, "confusion_matrix": list}


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A finished run's metrics.json, checked: one line naming the file and the key when a key is missing or of the
    wrong type (another version's file, or one edited by hand); what later versions added is derived."""
    path = Path(run_dir) / METRICS
    metrics = read_json(path, "metrics")
    if not isinstance(metrics, dict):
        raise UserError(f"{path} is not a cnnarena metrics file")
    for key, kind in METRICS_NEEDS.items():
        value = metrics.get(key)
        fits = isinstance(value, int | float) if kind is float else isinstance(value, kind)
        if value is None or isinstance(value, bool) or not fits:
            raise UserError(f"{path}: {key!r} is {'missing' if key not in metrics else f'not {kind.__name__}'}: "
                            "is it a cnnarena run's? (train it again into a new --out)")
    metrics.setdefault("seconds_per_epoch", metrics["train_seconds"] / max(1, metrics["epochs_run"]))
    return metrics


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's saved config.yaml ({} when it has none)."""
    import yaml

    path = Path(run_dir) / CONFIG
    if not path.exists():
        return {}
    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"corrupt {path}: {str(e).splitlines()[0]}") from None
    if saved is None:
        return {}
    if not isinstance(saved, dict):
        raise UserError(f"{path} is not a mapping of option: value: is it a cnnarena run's?")
    return saved


HISTORY_NEEDS = ("epoch", "epoch_seconds", "val_loss", "val_accuracy")  # what the readers of an epoch rely on


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """One dict per trained epoch, in order ([] before the first epoch ends); one line naming the file, the line and
    the key when a row is not an epoch's (another version's file, or one edited by hand)."""
    path = Path(run_dir) / HISTORY
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise UserError(f"{path}: line {number} is not JSON: is it a cnnarena run's?") from None
        missing = [k for k in HISTORY_NEEDS if not isinstance(row, dict) or not isinstance(row.get(k), int | float)
                   or isinstance(row.get(k), bool)]
        if missing:
            raise UserError(f"{path}: line {number} has no number for {missing[0]!r}: is it a cnnarena run's?")
        rows.append(row)
    return rows


def write_history(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """history.jsonl and history.csv, rewritten whole (after every epoch)."""
    import csv

    d = Path(run_dir)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(d / HISTORY_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    (d / HISTORY).write_text("".join(json.dumps(r) + "\n" for r in rows))


# Settings a resumed or reused run may change: where things are, the device, the time budget, how evaluation is
# batched. Every other setting changes what the run computes.
MAY_DIFFER = {"out", "data_dir", "split", "train.device", "train.max_minutes", "train.eval_batch_size",
              "train.compile", "train.budget", "train.max_memory", "train.micro_batch", "train.tensorboard"}


def flatten_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A config.yaml (or study.yaml) dict one level flat: train.lr beside model. Deeper values stay whole (augment
    is one setting: it lists only what is on)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def check_same_settings(run_dir: Path, settings: dict[str, Any]) -> None:
    """Resuming or reusing run_dir with other settings (a config's to_dict()) would mix two experiments under one
    name: refuse."""
    import yaml

    if not has_trained(run_dir):
        return
    saved = read_config(run_dir)
    now = yaml.safe_load(yaml.safe_dump(settings))  # the same YAML round trip as the saved file
    flat_saved, flat_now = flatten_settings(saved or {}), flatten_settings(now)
    # keys only one side has come from another cnnarena version: not a difference in what was asked for
    changed = [f"{key} {flat_saved[key]!r} -> {flat_now[key]!r}"
               for key in sorted((set(flat_saved) & set(flat_now)) - MAY_DIFFER)
               if flat_saved[key] != flat_now[key]]
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise UserError(f"{run_dir} holds a run with other settings ({'; '.join(changed[:3])}{more}): "
                        "pass another --out, or delete it to start over")


def model_dir(model: str) -> str:
    """A model's folder in a study (runs/DIR/, lr/DIR/): its name, or a layer-spec file's name, made safe: never a
    path join (an absolute spec path once put the runs beside the spec)."""
    import re

    name = Path(model).stem if model.lower().endswith((".yaml", ".yml", ".json")) else model
    return re.sub(r"[^A-Za-z0-9._@=+-]+", "-", name).strip("-.") or "model"


AT = "@"  # MODEL@SIZEpx: a pretrained model run at one of --input-sizes


def base_model(name: str) -> str:
    """The model a study's run trains: 'efficientnet_lite0@96px' -> 'efficientnet_lite0'."""
    return name.split(AT, 1)[0] if name.endswith("px") and AT in name else name
