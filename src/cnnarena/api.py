"""The application layer: what one command line or one notebook cell does, in one call each.

`cnnarena.train`, `study`, `load`, `doctor` and `models` are the public front door (re-exported by the package);
the CLI calls these functions and nothing else. Heavy libraries are imported inside the calls, after the first
line has been said.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import rundir, runtime, schema
from .commands import (  # noqa: F401 - the CLI's other commands, and what it prints with
    accuracy_text,
    check_output_file,
    configure_for_command_line,
    describe_text,
    inspect,
    log_tune_to_mlflow,
    lr_find,
    model_text,
    per_class_text,
    render_predictions,
    resource_error,
    silence_stdout,
    summary,
    tune,
    unreadable_explanations,
    unreadable_text,
    write_text,
)
from .errors import UserError
from .results import DataReport, Run, Study
from .run_actions import evaluate, explain, export, predict, serve  # noqa: F401 - the CLI's commands on a run
from .runtime import exit_now  # noqa: F401 - how the command ends
from .tracking.checked_uri import checked_uri, mask_secrets

log = logging.getLogger("cnnarena")

TRAIN_KEYWORDS = {**schema.RUN, **schema.RUN_ONLY}
# a study sets each run's model, split, data and fraction itself
STUDY_KEYWORDS = {**{k: o for k, o in schema.RUN.items() if k not in ("model", "split", "fraction")}, **schema.STUDY,
                  **schema.STUDY_ONLY}


def _values(data: str | Path, options: dict[str, Any], table: dict[str, schema.Option], what: str) -> dict[str, Any]:
    """Keyword arguments as config values, checked like a config file's: paths as text (~ expanded), lists as
    given or as the command line's comma text."""
    from .config import check_types

    values = {"data": str(data)}
    for name, value in options.items():
        if value is None:  # not given
            continue
        kind = table[name].kind
        if isinstance(value, Path) or (kind is Path and value is not None):
            value = str(Path(value).expanduser())
        elif kind in ("ints", "floats", "names"):
            value = schema.parse_list(value, kind, table[name].flag)
        values[name] = value
    return check_types(values, f"{what}()")


def train(data: str | Path, model: str | None = None, out: str | Path | None = None, **options: Any) -> Run:
    """Train one model and evaluate it on the test split; everything lands in the run directory `out`.

    Args:
        data: digits, fashion-mnist, cifar10, hf:NAME, or a path (class folders, CSV, CIFAR batches, Parquet).
        model: a custom preset (`fast`, `simple-2conv`...), a layer-spec file, or a pretrained backbone; `fast`
            unless given here or in the `config` file.
        out: the run directory (default runs/DATA-MODEL-TIME); an unfinished run there resumes, a finished one
            with the same settings is returned as it is.
        **options: any option of `cnnarena train` (epochs=12, budget="5m", augment="flip"...), with the same
            defaults and the model's recipe; `config` names a YAML file of options, `mlflow` a tracking URI.

    Returns:
        The finished `Run`.

    Example:
        >>> run = cnnarena.train("digits", model="fast", epochs=3)
        >>> run.metrics["test_accuracy"]
    """
    cfg, mlflow = train_config(data, model, out, **options)
    return train_resolved(cfg, mlflow)


def train_config(data: str | Path, model: str | None = None, out: str | Path | None = None, *,
                 default_model: str = "fast", **options: Any):
    """The resolved config of a run (defaults < the model's recipe < a config file < these options), its run
    directory decided and checked, and the --mlflow value: everything `train` checks before any data is read."""
    schema.check_names(options, TRAIN_KEYWORDS, "train")
    values = _values(data, {"model": model, "out": out, **options}, TRAIN_KEYWORDS, "train")
    config_file, mlflow = values.pop("config", None), values.pop("mlflow", None)
    from .config import build_config, load_config_file

    file_values = load_config_file(config_file)
    values["model"] = values.get("model") or file_values.get("model") or default_model
    cfg = build_config(file_values, values)
    cfg.out = str(Path(cfg.out).expanduser()) if cfg.out else str(rundir.default_run_dir(cfg.data, cfg.model))
    rundir.check_out(cfg.out, "run")
    return cfg, mlflow


def train_resolved(cfg, mlflow: str | None = None) -> Run:
    """Train a config `train_config` resolved; the finished Run."""
    with runtime.talking():
        if runtime.in_notebook():
            log.info(f"cnnarena train: {cfg.model} on {cfg.data} -> {cfg.out}")
        return Run(_train(cfg, checked_uri(mlflow)))


def _train(cfg, uri: str | None) -> Path:
    """train_run under torchrun's process group when launched by it, logging live to MLflow when asked."""
    from .models.registry import check_model_name
    from .run import train_run
    from .train import distributed

    done = rundir.state(cfg.out) is rundir.State.FINISHED  # a finished run is returned as it is: nothing to load
    check_model_name(cfg.model, weights=cfg.weights, pretrained=cfg.pretrained and not done)
    ranks = distributed.start(cfg.train.device)
    try:
        run_dir = distributed.from_main(Path(cfg.out))  # rank 0's clock names a default directory
        rundir.check_out(run_dir, "run")
        live = []
        if uri is not None:
            from .tracking.mlflow_live import LiveRun

            live = [LiveRun(run_dir, uri)]
        try:
            train_run(cfg, run_dir, callbacks=live)
        finally:
            for tracker in live:
                tracker.close()
    finally:
        distributed.stop()
    if uri is not None and (ranks is None or ranks.is_main):
        from .tracking.mlflow_log import log_run

        log.info(mask_secrets(f"MLflow run {log_run(run_dir, uri)} at {uri}"))
    return run_dir


def study(data: str | Path = "auto", models: list[str] | str | None = None, out: str | Path | None = None,
          **options: Any) -> Study:
    """Train several models on one shared split and write the comparison and its report.

    Args:
        data: as for `train`; "auto" is Fashion-MNIST when installed, else digits (the default study).
        models: the models to compare, e.g. ["simple-2conv", "fast", "efficientnet_lite0"].
        out: the study directory (default studies/default for the default study, studies/DATA-NAME for your
            data); rerunning resumes it.
        **options: any option of `cnnarena study` (budget="5m", seeds=3, fractions=[0.1, 1], lrs=...), and any
            run option, applied to every model (epochs=5, image_size=96...).

    Example:
        >>> s = cnnarena.study("photos/", models=["fast", "efficientnet_lite0"], budget_per_model="2m")
        >>> s.winner.metrics["test_accuracy"], s.report_path
    """
    schema.check_names(options, STUDY_KEYWORDS, "study")
    values = _values(data, {"models": models, "out": out, **options}, STUDY_KEYWORDS, "study")
    with runtime.talking():
        return Study(_study(values))


def _study(values: dict[str, Any]) -> Path:
    from .study.config import build_study_config, load_study_file

    special = {k: values.pop(k, None) for k in ("config", "mlflow", "storage", "study_name", "heartbeat",
                                                  "report_only")}
    if values["data"] == "auto" and special["config"]:
        values["data"] = None
    if special["config"]:
        file_values = load_study_file(Path(special["config"]))
    else:
        file_values = {k: v for k, v in schema.DEFAULT_STUDY.items()
                       if values["data"] == "auto" or k not in schema.AUTO_DATA_ONLY}
    if values.get("budget") is not None or values.get("budget_per_model") is not None:  # the caller's budget wins
        file_values = {k: v for k, v in file_values.items() if k not in ("budget", "budget_per_model")}
    cfg = build_study_config(file_values, values)
    out = rundir.check_out(cfg.out, "study")
    from .study.config import check_same_study
    from .study.runner import check_models, missing_runs

    check_same_study(cfg)

    check_models(cfg)
    uri = checked_uri(special["mlflow"])
    if special["report_only"]:
        missing = missing_runs(cfg)
        if missing:
            raise UserError(f"--report-only: {len(missing)} run(s) not finished yet, first {missing[0]}")
    _run_study(cfg, uri, special)
    return out


def _run_study(cfg, uri: str | None, special: dict[str, Any]) -> None:
    from .study.runner import run_study

    live = None
    if uri is not None and not special["report_only"]:  # each run logs under the study's parent as it trains
        from .tracking.mlflow_live import live_runs_under
        from .tracking.mlflow_log import start_study

        live = live_runs_under(lambda: start_study(Path(cfg.out), uri), uri)
    if special["storage"] is not None:
        from .study.shared import run_shared_study

        comparison = run_shared_study(cfg, special["storage"], special["study_name"], special["heartbeat"] or 10.0,
                                      live)
        if comparison is None:
            log.info(f"every run of {cfg.out} is done; another worker wrote the report")
            return
    else:
        comparison = run_study(cfg, live)
    if uri is not None:
        from .tracking.mlflow_log import log_study

        log.info(mask_secrets(f"MLflow parent run {log_study(Path(cfg.out), uri, cfg.to_dict(), comparison)} at {uri}"))


def load(path: str | Path) -> Run | Study:
    """A run directory as a `Run` (a study directory as a `Study`), written by this or an earlier version.

    Example:
        >>> run = cnnarena.load("runs/digits-fast-20261206-101500")
        >>> run.history.tail()
    """
    found = rundir.state(path)
    if found is rundir.State.STUDY:
        return Study(path)
    if found in (rundir.State.FINISHED, rundir.State.PARTIAL):
        return Run(path)
    if not Path(path).exists():
        raise UserError(f"{path} does not exist: give a run or study directory")
    raise UserError(f"{path} is not a cnnarena run or study directory ({found.value})")


def doctor(data: str | Path, *, split: str | Path | None = None, run: str | Path | None = None,
           study: str | Path | None = None, label_issues: bool = True, near: bool = True,
           near_threshold: float = 0.99, folds: int = 5, out: str | Path | None = None,
           data_dir: str | Path | None = None, image_size: int | None = None,
           class_map: str | Path | None = None, label_model: str = "auto") -> DataReport:
    """Find what is wrong in a dataset: unreadable and unusual files, imbalance, exact and near-duplicates (within
    a class, across classes, across a split's parts: give `split`, `run` or `study`) and mislabeled images.

    Example:
        >>> report = cnnarena.doctor("photos/")
        >>> report.serious
    """
    given = [(n, p) for n, p in (("--split", split), ("--run", run), ("--study", study)) if p]
    if len(given) > 1:
        raise UserError(f"give one of --split, --run and --study, not {' and '.join(n for n, _ in given)}")
    manifest = None
    if given:
        name, path = given[0]
        manifest = Path(path) if name == "--split" else Path(path) / rundir.SPLIT
        if not manifest.is_file():
            raise UserError(f"{name} {path}: no split manifest at {manifest}")
    if out is not None:
        if Path(out).exists() and not Path(out).is_dir():
            raise UserError(f"--out {out} is a file, not a directory: give a new or existing directory")
        rundir.check_parents(Path(out), "--out")
    if not 2 <= folds <= 20:
        raise UserError(f"--folds must be 2 to 20, got {folds}")
    if not 0.5 <= near_threshold <= 1.0:
        raise UserError(f"--near-threshold must be 0.5 to 1, got {near_threshold}")
    from .data.doctor import LABEL_MODELS

    if label_model not in LABEL_MODELS:
        raise UserError(f"unknown --label-model {label_model!r}: use {', '.join(LABEL_MODELS)}")
    with runtime.talking():
        from .data.doctor import all_images, examine
        from .data.sources import load_source
        from .report.doctor_report import write_doctor_report

        source = load_source(str(data), data_dir=data_dir, image_size=image_size, class_map=class_map)
        split_ids = _read_split_ids(manifest) if manifest else None
        from .models import embeddings

        report = examine(source, split_ids=split_ids, root=source.root, label_issues=label_issues, near=near,
                         near_threshold=near_threshold, folds=folds, label_model=label_model,
                         embed=embeddings.backbone_embeddings, embed_name=embeddings.describe())
        report["dataset"]["spec"] = str(data)
        target = Path(out) if out else runtime.cache_dir() / "doctor" / source.name
        images = all_images(source)[0]
        files = write_doctor_report(report, images, target)
        return DataReport(report, target, files, images)


def check_review_port(port: int) -> None:
    """A taken port is refused before the doctor's work, not after it."""
    from .serve.address import check_listen

    if port:
        check_listen("127.0.0.1", port)


def review(report: DataReport, *, port: int = 0, wait: bool = False):
    """Serve the review page of a doctor's findings on 127.0.0.1: mark each image keep, exclude or relabel; the page
    saves curation.yaml beside the report (give it to train or study as `curation=`).

    By default (a notebook) the page is served from a background thread and returned at once: a cell shows it
    inline, `.url` links to it, `.stop()` ends it. wait=True (the command line) serves until Ctrl-C."""
    return report.review(port=port, wait=wait)


def _read_split_ids(path: Path) -> dict[str, list[str]]:
    manifest = rundir.read_json(path, "split manifest")
    try:
        return {part: list(manifest[part]) for part in ("train", "val", "test")}
    except (KeyError, TypeError) as e:
        raise UserError(f"cannot read the split manifest {path}: {e}") from None


def models(pattern: str | None = None, all: bool = False):  # noqa: A002 - `cnnarena models --all`
    """The custom CNN presets and the pretrained backbones as a pandas DataFrame (the table of `cnnarena models`).

    Example:
        >>> cnnarena.models("efficientnet")
    """
    from .models.catalog import model_frame

    return model_frame(pattern, everything=all)
