"""The application layer: what one command line or one notebook cell does, in one call each.

`cnnarena.train`, `study`, `load`, `doctor` and `models` are the public front door (re-exported by the package);
the CLI calls these functions and nothing else. Heavy libraries are imported inside the calls, after the first
line has been said.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import rundir, runtime, schema
from .errors import UserError
from .results import DataReport, Run, Study
from .run_actions import evaluate, explain, export, predict, serve  # noqa: F401 - the CLI's commands on a run

log = logging.getLogger("cnnarena")

TRAIN_KEYWORDS = {**schema.RUN, **schema.RUN_ONLY}
STUDY_KEYWORDS = {**schema.RUN, **schema.STUDY, **schema.STUDY_ONLY}


@contextmanager
def talking() -> Iterator[None]:
    """In a notebook, cnnarena's messages and a live progress bar show in the cell for the duration of a call,
    with no set-up call; elsewhere nothing changes unless the caller configured runtime (the CLI does)."""
    if runtime.in_notebook() and not runtime.console_configured():
        with runtime.using(console=True, notebook_progress=True):
            yield
    else:
        yield


def _values(data: str | Path, options: dict[str, Any], table: dict[str, schema.Option]) -> dict[str, Any]:
    """Keyword arguments as config values: paths as text, comma lists parsed (the CLI passes them as text)."""
    values = {"data": str(data)}
    for name, value in options.items():
        kind = table[name].kind
        if isinstance(value, Path) or (kind is Path and value is not None):
            value = str(value)
        elif kind in ("ints", "floats", "names"):
            value = schema.parse_list(value, kind, table[name].flag)
        values[name] = value
    return values


def train(data: str | Path, model: str | None = "fast", out: str | Path | None = None, **options: Any) -> Run:
    """Train one model and evaluate it on the test split; everything lands in the run directory `out`.

    Args:
        data: digits, fashion-mnist, cifar10, hf:NAME, or a path (class folders, CSV, CIFAR batches, Parquet).
        model: a custom preset (`fast`, `simple-2conv`...), a layer-spec file, or a pretrained backbone.
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
    schema.check_names(options, TRAIN_KEYWORDS, "train")
    values = _values(data, {"model": model, "out": out, **options}, TRAIN_KEYWORDS)
    config_file, mlflow = values.pop("config", None), values.pop("mlflow", None)
    if out is not None:
        rundir.check_out(out, "run")
    with talking():
        if runtime.in_notebook():
            log.info(f"cnnarena train: {values.get('model') or schema.RUN['model'].default} on {data}")
        from .config import build_config, load_config_file

        cfg = build_config(load_config_file(config_file), values)
        return Run(_train(cfg, _mlflow_uri(mlflow)))


def default_run_dir(data: str | Path, model: str) -> Path:
    """runs/DATA-MODEL-TIME, the run directory of a run that is not given one."""
    return rundir.default_run_dir(str(data), model)


def _train(cfg, uri: str | None) -> Path:
    """train_run under torchrun's process group when launched by it, logging live to MLflow when asked."""
    from .models.registry import check_model_name
    from .run import train_run
    from .train import distributed

    check_model_name(cfg.model, weights=cfg.weights, pretrained=cfg.pretrained)
    ranks = distributed.start(cfg.train.device)
    try:
        run_dir = distributed.from_main(Path(cfg.out) if cfg.out else rundir.default_run_dir(cfg.data, cfg.model))
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

        log.info(f"MLflow run {log_run(run_dir, uri)} at {uri}")
    return run_dir


def _mlflow_uri(value: str | None) -> str | None:
    """--mlflow's tracking URI, checked (mlflow importable, the store reachable and set up) before anything trains;
    under torchrun by rank 0 alone, the one that logs."""
    if value is None:
        return None
    from .tracking.mlflow_log import open_store, tracking_uri

    uri = tracking_uri(value)
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UserError("--mlflow needs the mlflow package: pip install mlflow") from None
    logging.getLogger("alembic").setLevel(logging.WARNING)  # table creation in a new SQLite store: not news
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    if os.environ.get("RANK", "0") == "0":
        open_store(uri)
    return uri


def study(data: str | Path = "auto", models: list[str] | str | None = None, out: str | Path | None = None,
          **options: Any) -> Study:
    """Train several models on one shared split and write the comparison and its report.

    Args:
        data: as for `train`; "auto" is Fashion-MNIST when installed, else digits (the default study).
        models: the models to compare, e.g. ["simple-2conv", "fast", "efficientnet_lite0"].
        out: the study directory (default studies/default); rerunning resumes it.
        **options: any option of `cnnarena study` (budget="5m", seeds=3, fractions=[0.1, 1], lrs=...), and any
            run option, applied to every model (epochs=5, image_size=96...).

    Example:
        >>> s = cnnarena.study("photos/", models=["fast", "efficientnet_lite0"], budget_per_model="2m")
        >>> s.winner.metrics["test_accuracy"], s.report_path
    """
    schema.check_names(options, STUDY_KEYWORDS, "study")
    values = _values(data, {"models": models, "out": out, **options}, STUDY_KEYWORDS)
    with talking():
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
    from .study.runner import check_models, missing_runs

    check_models(cfg)
    uri = _mlflow_uri(special["mlflow"])
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

        log.info(f"MLflow parent run {log_study(Path(cfg.out), uri, cfg.to_dict(), comparison)} at {uri}")


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
           study: str | Path | None = None, label_issues: bool = True, near: bool = True, folds: int = 5,
           out: str | Path | None = None, data_dir: str | Path | None = None, image_size: int | None = None,
           class_map: str | Path | None = None) -> DataReport:
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
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out} is a file, not a directory: give a new or existing directory")
    if not 2 <= folds <= 20:
        raise UserError(f"--folds must be 2 to 20, got {folds}")
    with talking():
        from .data.doctor import all_images, examine
        from .data.sources import load_source
        from .report.doctor_report import write_doctor_report

        source = load_source(str(data), data_dir=data_dir, image_size=image_size, class_map=class_map)
        split_ids = _read_split_ids(manifest) if manifest else None
        report = examine(source, split_ids=split_ids, root=source.root, label_issues=label_issues, near=near,
                         folds=folds)
        report["dataset"]["spec"] = str(data)
        target = Path(out) if out else runtime.cache_dir() / "doctor" / source.name
        write_doctor_report(report, all_images(source)[0], target)
        return DataReport(report, target)


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


def inspect(data: str | Path, out: str | Path = "inspect", *, data_dir: str | Path | None = None,
            image_size: int | None = None, class_map: str | Path | None = None,
            strict: bool = False) -> tuple[dict[str, Any], list[Path]]:
    """Class counts, imbalance and image sizes of a dataset (a dict), and the charts written to `out`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory: give a new or existing directory")
    rundir.check_parents(out, "--out")
    from .data.inspect import describe, write_plots
    from .data.sources import load_source

    source = load_source(str(data), data_dir=data_dir, image_size=image_size, class_map=class_map, strict=strict)
    return describe(source), write_plots(source, out)


def describe_text(description: dict[str, Any]) -> str:
    from .data.inspect import format_description

    return format_description(description)


def summary(model: str, input: str = "3x32x32", classes: int = 10, depth: int = 1,  # noqa: A002 - the CLI's name
            input_size: int | None = None) -> str:
    """A Keras-style table of a model: layer, output shape, parameters, trainable and non-trainable totals."""
    from .models.summary import summary_table

    return summary_table(model, input, classes=classes, depth=depth, input_size=input_size)


def model_text(pattern: str | None = None, everything: bool = False) -> str:
    from .models.catalog import model_text as text

    return text(pattern, everything)


def lr_find(data: str | Path, model: str = "simple-2conv", *, optimizer: str = "adam", batch_size: int = 128,
            steps: int = 100, start_lr: float = 1e-7, end_lr: float = 10.0, input_size: int | None = None,
            data_dir: str | Path | None = None, out: str | Path = "lr_find.png"):
    """Learning-rate range test: the loss as the LR rises exponentially; the result (.suggestion) and its plot."""
    from .report.lr_plot import plot_path
    from .train.lr_finder import check_range

    check_range(start_lr, end_lr, steps)
    out = plot_path(Path(out))
    rundir.check_parents(out, "--out")
    with talking():
        from .run import lr_range_test

        return lr_range_test({"data": str(data), "model": model, "optimizer": optimizer, "batch_size": batch_size,
                              "input_size": input_size, "data_dir": str(data_dir) if data_dir else None},
                             start_lr=start_lr, end_lr=end_lr, steps=steps, out=out)


def tune(data: str, model: str, *, trials: int = 20, space: str | Path | None = None, storage: str | None = None,
         study_name: str | None = None, pruner: str = "median", seed: int = 0, heartbeat: float = 10.0,
         device: str | None = None, mlflow: str | None = None, out: str | Path = "tune") -> dict[str, Any]:
    """Hyper-parameter search with Optuna; each trial is a normal run under OUT/trials/. The summary."""
    import optuna

    from .study.tune import TuneConfig, run_tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # cnnarena says what each trial does
    uri = _mlflow_uri(mlflow)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory: give a new or existing directory")
    tc = TuneConfig(data=data, model=model, trials=trials, out=out, storage=storage, study_name=study_name,
                    space=Path(space) if space else None, pruner=pruner, seed=seed, heartbeat=heartbeat,
                    common={"device": device} if device else None)
    live = None
    if uri is not None:  # each trial logs under the search's parent as it trains
        from .tracking.mlflow_live import live_runs_under
        from .tracking.mlflow_log import start_tune

        live = live_runs_under(lambda: start_tune(out, uri, tc.name()), uri)
    with talking():
        result = run_tune(tc, live)
    if uri is not None:  # after the summary: a tracking server that fails now loses none of it
        from .tracking.mlflow_log import log_tune, without_password

        # the trial target is left out: a later batch raises it, and MLflow's parameters cannot change
        settings = {"data": data, "model": model, "space": str(space) if space else "default",
                    "storage": without_password(storage) or "sqlite (OUT/optuna.db)", "pruner": pruner, "seed": seed}
        result["mlflow_parent"] = log_tune(out, uri, settings, result)
    return result


def per_class_text(metrics: dict[str, Any]) -> str:
    """The per-class table a person reads (like scikit-learn's classification_report)."""
    from .evaluate.metrics import format_per_class

    return format_per_class(metrics)


def unreadable_text(rows: list, total: int) -> str:
    from .evaluate.predict import unreadable_summary

    return unreadable_summary(rows, total)


def render_predictions(rows: list, fmt: str) -> str:
    from .evaluate.predict import FORMATS, render

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}: use {', '.join(FORMATS)}")
    return render(rows, fmt)


def doctor_summary(report: DataReport) -> str:
    return report.summary


# For the command line: what it needs from below, without reaching past this module.

def configure_for_command_line() -> None:
    """The CLI opts into process-wide settings (runtime.py): malloc and thread tuning, live progress on a terminal,
    messages on stderr."""
    import sys

    runtime.configure(
        tune_malloc=True,  # before any tensor exists, so the heap serves every large block (see memory.py)
        tune_threads=os.environ.get("CNNARENA_THREAD_TUNING", "1") != "0",
        live_progress=sys.stderr.isatty(), console=True)


def check_output_file(path: Path, option: str) -> None:
    """A file to create or overwrite: not an existing directory, and not inside a file."""
    if Path(path).is_dir():
        raise UserError(f"{option} {path} is a directory: give a file name, e.g. {Path(path) / 'out'}")
    rundir.check_parents(Path(path), option)


def write_text(path: Path, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text if text.endswith("\n") else text + "\n")


def unreadable_explanations(images: list[dict[str, Any]]) -> str:
    from .evaluate.predict import Prediction, unreadable_summary

    return unreadable_summary([Prediction(r["path"], error=r["error"]) for r in images if r["error"]], len(images))


def silence_stdout() -> None:
    """The reader of stdout left (`cnnarena models --all | head`): say nothing more."""
    import sys

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def resource_error(e: BaseException, write_errnos: set[int]) -> str | None:
    """The one line for running out of memory or of a writable disk (the user's to fix), else None (a bug)."""
    import errno

    if isinstance(e, OSError):
        if e.errno not in write_errnos:
            return None
        where = f" {e.filename}" if e.filename else ""
        verb = "access" if e.errno in (errno.EACCES, errno.EPERM) else "write"
        return (f"cannot {verb}{where}: {e.strerror}; what was already written is intact, and rerunning the same "
                "command resumes once it can be written")
    message = str(e)
    if not (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in message or "out of memory" in message.lower()):
        return None
    first = message.strip().splitlines()[0][:160] if message.strip() else type(e).__name__
    return (f"out of memory ({first}): lower --max-memory, --batch-size or --input-size; checkpoints written so far "
            "are intact and rerunning resumes")
