"""The commands besides the public five (inspect, summary, lr-find, tune), and what the command line needs in order to
print: re-exported by api.py, the one module the CLI calls."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import rundir, runtime
from .errors import UserError
from .tracking.checked_uri import checked_uri


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
    with runtime.talking():
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
    uri = checked_uri(mlflow)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory: give a new or existing directory")
    rundir.check_parents(out, "--out")
    tc = TuneConfig(data=data, model=model, trials=trials, out=out, storage=storage, study_name=study_name,
                    space=Path(space) if space else None, pruner=pruner, seed=seed, heartbeat=heartbeat,
                    common={"device": device} if device else None)
    live = None
    if uri is not None:  # each trial logs under the search's parent as it trains
        from .tracking.mlflow_live import live_runs_under
        from .tracking.mlflow_log import start_tune

        live = live_runs_under(lambda: start_tune(out, uri, tc.name()), uri)
    with runtime.talking():
        result = run_tune(tc, live)
    if uri is not None:  # what log_tune_to_mlflow needs, once the summary has been shown
        from .tracking.mlflow_log import without_password

        # the trial target is left out: a later batch raises it, and MLflow's parameters cannot change
        result["mlflow"] = {"uri": uri, "out": str(out), "settings": {
            "data": data, "model": model, "space": str(space) if space else "default",
            "storage": without_password(storage) or "sqlite (OUT/optuna.db)", "pruner": pruner, "seed": seed}}
    return result


def log_tune_to_mlflow(result: dict[str, Any]) -> str | None:
    """Log a finished search as one MLflow parent run (after its summary is shown: a tracking server that fails
    then loses none of it); the parent's id and the tracking URI, or None when --mlflow was not given."""
    given = result.get("mlflow")
    if given is None:
        return None
    from .tracking.mlflow_log import log_tune

    return f"{log_tune(Path(given['out']), given['uri'], given['settings'], result)} at {given['uri']}"


def per_class_text(metrics: dict[str, Any]) -> str:
    """The per-class table a person reads (like scikit-learn's classification_report)."""
    from .evaluate.metrics import format_per_class

    return format_per_class(metrics)


def accuracy_text(metrics: dict[str, Any], tail: str = "") -> str:
    """The closing accuracy line, with the one-view accuracy under test-time augmentation."""
    from .evaluate.metrics import format_accuracy

    return format_accuracy(metrics, tail)


def unreadable_text(rows: list, total: int) -> str:
    from .evaluate.predict import unreadable_summary

    return unreadable_summary(rows, total)


def render_predictions(rows: list, fmt: str) -> str:
    from .evaluate.predict import FORMATS, render

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}: use {', '.join(FORMATS)}")
    return render(rows, fmt)


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
