"""Command line: parse (options generated from schema.py), call the API, print. No logic of its own.

Every mistake a user can make ends as one `error: ...` line on stderr and exit code 2."""

from __future__ import annotations

import difflib
import errno
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from . import __version__, api, schema
from .errors import UserError

TYPES = {str: click.STRING, Path: click.Path(path_type=Path)}


class _Number(click.ParamType):
    """A number within the option's range that is finite and of a sensible size (inf, nan and 400-digit numbers
    are one error line, not a traceback later)."""

    def __init__(self, base: click.ParamType) -> None:
        self.base, self.name = base, base.name

    def convert(self, value, param, ctx):
        number = self.base.convert(value, param, ctx)
        problem = schema.number_problem(number)
        if problem is not None:
            self.fail(problem, param, ctx)
        return number


def _type(o: schema.Option) -> click.ParamType:
    if o.kind in (int, float):
        base = click.INT if o.kind is int else click.FLOAT
        if o.low is not None or o.high is not None:
            base = (click.IntRange if o.kind is int else click.FloatRange)(o.low, o.high)
        return _Number(base)
    return TYPES.get(o.kind, click.STRING)


def _param(o: schema.Option, help_for: Callable[[schema.Option], str]) -> click.Parameter:
    """A click parameter of a schema option: run and study options default to None (not given), so that the
    recipes and --config files below the command line can fill them."""
    if o.argument:
        extra = {} if o.required else {"default": o.default}  # click takes an explicit default for "given"
        return click.Argument([o.name], type=_type(o), required=o.required, nargs=-1 if o.many else 1, **extra)
    decls = [o.flag, *([o.short] if o.short else []), o.name]
    if o.kind == "flag":
        return click.Option(decls, is_flag=True, default=False, help=help_for(o))
    if o.kind is bool:
        flag = o.cli or f"{o.flag}/--no-{o.flag[2:]}"
        return click.Option([flag, o.name], default=None if o.config else o.default, help=help_for(o))
    given = {"required": True} if o.required else {"default": None if o.config else o.default}  # see _param's args
    return click.Option(decls, type=_type(o), help=help_for(o), show_default=False, **given)


def _command_help(o: schema.Option) -> str:
    if o.shown is not None:
        return f"{o.help} [{o.shown}]".strip() if o.shown else o.help
    shown = "on" if o.default is True else "off" if o.default is False else o.default
    return o.help if o.default is None or o.kind == "flag" else f"{o.help} [{shown}]"


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order they are defined here: the common ones first


@click.group(cls=_Commands, context_settings={"help_option_names": ["--help"]},
             help="Custom CNN from scratch vs ImageNet-pretrained fine-tuning: train, compare, deploy.")
@click.version_option(__version__, "--version", message="cnnarena %(version)s", help="Print the version and exit.")
def app() -> None:
    pass


def command(name: str, *examples: str, options: dict[str, schema.Option] | None = None,
            help_for: Callable[[schema.Option], str] = _command_help):
    """Register `function` as the command `name`, its parameters generated from `options` (by default the
    command's table in the schema), its epilog the examples."""
    def register(function: Callable) -> Callable:
        table = options if options is not None else schema.command_options(name)
        params = [_param(o, help_for) for o in table.values() if not o.hidden]
        epilog = "\b\n" + "\n".join(examples)  # \b: click keeps the examples as written, whole lines to copy
        app.add_command(click.Command(name, callback=function, params=params, help=function.__doc__,
                                      epilog=epilog))
        return function
    return register


def _given(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None and v != ()}


@command("train", "Example: cnnarena train fashion-mnist --model fast --epochs 12 --out runs/fast",
         options={"data": schema.DATA, **schema.RUN, **schema.RUN_ONLY}, help_for=schema.run_help)
def train(data: str, **options) -> None:
    """Train one model and evaluate it on the test split; everything lands in the run directory.

    Under `torchrun --nproc_per_node N -m cnnarena train ...` the N processes train one model data-parallel
    (DistributedDataParallel: gloo on CPUs, NCCL on GPUs); rank 0 writes the run directory."""
    options = _given(options)
    cfg, mlflow = api.train_config(data, default_model=schema.RUN["model"].default, **options)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 speaks
    if main_rank:  # before the libraries load: what trains, and where
        print(f"cnnarena train: {cfg.model} on {data} -> {cfg.out}", flush=True)
    run = api.train_resolved(cfg, mlflow)
    if main_rank:
        m = run.metrics
        print(api.per_class_text(m))
        tail = f"  ({m['epochs_run']} epochs, {m['train_seconds']:.1f}s training)"
        print(f"\n{api.accuracy_text(m, tail)}\nrun directory: {run.path}")


STUDY_OPTIONS = {"data": schema.Option("data", str, "auto", schema.DATA_HELP + "; auto = Fashion-MNIST when "
                                       "present, else digits", argument=True, config=False, shown=""),
                 **{k: o for k, o in schema.STUDY.items() if k != "out"},
                 **{k: schema.study_run_option(k) for k in schema.STUDY_RUN_OPTIONS},
                 "out": schema.STUDY["out"], **schema.STUDY_ONLY}


@command("study", "Examples:", "  cnnarena study   # the default study (Fashion-MNIST if present, "
         "else digits)", "  cnnarena study fashion-mnist --models simple-2conv,fast,efficientnet_lite0 \\",
         "      --lrs 1e-4,1e-3,1e-2,1e-1 --seeds 3 --fractions 0.1,0.25,0.5,1", options=STUDY_OPTIONS,
         help_for=schema.study_help)
def study(data: str, **options) -> None:
    """Train several models on one shared split and write the comparison (Markdown, CSV, JSON, HTML report)."""
    options = _given(options)
    result = api.study(data, models=options.pop("models", None), out=options.pop("out", None), **options)
    if result.finished:
        print(result.summary_text)
        print(f"report: {result.report_path}  ({result.comparison['study_seconds']:.0f} s)")


@command("evaluate", "Example: cnnarena evaluate runs/fast --data ./new-photos --no-tta")
def evaluate(run_dir: Path, data: str | None, tta: bool | None) -> None:
    """Re-evaluate a saved run's model on its test split (or on another dataset with the same classes).

    With no options this reproduces the test accuracy of the run's metrics.json; results go to evaluation.json."""
    m = api.evaluate(run_dir, data=data, tta=tta)
    print(f"evaluated on {m['test_set']}; test-time augmentation {'on' if m['tta'] else 'off'}"
          f"{' with ' + str(m['tta_shift']) + '-px shifts' if m.get('tta_shift') else ''} (from {m['tta_from']})\n")
    print(api.per_class_text(m))
    print(f"\n{api.accuracy_text(m)}")


@command("inspect", "Example: cnnarena inspect ./RealWaste --out inspect-realwaste")
def inspect(data: str, out: Path, data_dir, image_size, class_map, strict: bool, as_json: bool) -> None:
    """Explore a dataset: class counts, imbalance, image sizes, a class chart and sample images."""
    desc, paths = api.inspect(data, out, data_dir=data_dir, image_size=image_size, class_map=class_map,
                              strict=strict)
    print(json.dumps(desc, indent=1) if as_json else api.describe_text(desc))
    print("\n".join(f"wrote {p}" for p in paths))


@command("doctor", "Example: cnnarena doctor ./RealWaste --run runs/fast --strict")
def doctor(data: str, as_json: bool, strict: bool, review: bool, review_port: int, **options) -> None:
    """Find what is wrong in a dataset: unreadable and unusual files, imbalance, exact and near-duplicates (within
    a class, across classes, across a split's parts) and mislabeled images; --review to act on them."""
    if review:
        api.check_review_port(review_port)
    report = api.doctor(data, **options)
    print(json.dumps(report.report) if as_json else report.summary)
    others = ", ".join(f.name for f in report.files if f.name != "doctor.md")
    print(f"report: {report.path / 'doctor.md'} (and {others})", file=sys.stderr)
    if review:
        api.review(report, port=review_port, wait=True)
    if strict and report.serious:
        print(f"error: serious findings (--strict): {'; '.join(report.serious)}", file=sys.stderr)
        raise click.exceptions.Exit(1)


@command("summary", "Example: cnnarena summary simple-2conv --input 1x28x28 --classes 10")
def summary(**options) -> None:
    """A Keras-style table: layer, output shape, parameters, with trainable / non-trainable totals."""
    print(api.summary(**options))


@command("predict", "Example: cnnarena predict runs/fast photos/ cat.jpg --top-k 3 --format csv "
         "--output preds.csv")
def predict(run_dir: Path, paths: tuple[Path, ...], top_k: int, fmt: str, output: Path | None, batch_size: int):
    """Top-k labels for image files, decoded exactly like the training data; unreadable files are reported."""
    api.render_predictions([], fmt)  # an unknown --format is refused before the model loads
    if output is not None:
        api.check_output_file(output, "--output")
    rows = api.predict(run_dir, list(paths), top_k=top_k, batch_size=batch_size)
    bad = [r for r in rows if r.error]
    if len(bad) == len(rows):
        raise UserError(api.unreadable_text(bad, len(rows)))
    text = api.render_predictions(rows, fmt)
    if output:
        api.write_text(output, text)
        print(f"wrote {len(rows) - len(bad)} predictions to {output}", file=sys.stderr)
    else:
        print(text)
    if bad:
        print(api.unreadable_text(bad, len(rows)), file=sys.stderr)


@command("explain", "Example: cnnarena explain runs/fast photos/ cat.jpg --method gradcam++ "
         "--out explain-fast")
def explain(run_dir: Path, paths: tuple[Path, ...], **options) -> None:
    """Heat maps (class activation maps, by the grad-cam library) of where the model looks: a PNG per image (input,
    overlay, top classes), grid.png, and explanations.json."""
    result = api.explain(run_dir, list(paths), **options)
    out, images = Path(result["out"]), result["images"]
    for r in (r for r in images if not r["error"]):
        best = r["predictions"][0]
        print(f"{r['path']}: {best['label']} {best['probability']:.3f} -> {out / r['png']}")
    done = sum(not r["error"] for r in images)
    print(f"{done} heat maps ({options['method']} of {result['layer']}) in {out}; grid: {out / result['grid']}",
          file=sys.stderr)
    if done < len(images):
        print(api.unreadable_explanations(images), file=sys.stderr)


@command("export", "Examples: cnnarena export runs/fast --format onnx --output deploy/fast.onnx",
         "  cnnarena export runs/fast --int8  (RUN_DIR/model.int8.onnx; serve --backend onnx-int8)",
         "  cnnarena export runs/fast --format torchscript")
def export(run_dir: Path, fmt: str, output: Path | None, **options) -> None:
    """Export the whole model (input [0,1] N×C×H×W) with a model card, checked against PyTorch: ONNX (float, or int8
    with --int8), TorchScript or a torch.export archive."""
    print("\n".join(api.export(run_dir, fmt, output, **options).lines))


@command("serve", "Example: cnnarena serve runs/fast --port 8000, then open http://127.0.0.1:8000/")
def serve(run_dir: Path, **options) -> None:
    """HTTP API (POST /v1/predict, POST /v1/explain, GET /v1/health, GET /v1/model) and a web page with webcam
    mode and heat maps at /.

    Limits: a request body of at most --max-body-mb (413, refused from Content-Length before any byte is read),
    --max-files images of at most --max-pixels each (413), headers of at most 16 KiB (400), an upload that stalls
    for --body-timeout seconds (408), --max-connections requests at once (503); a connection that has not sent a
    whole request head --head-timeout seconds after opening (or after its last answer) is closed, so idle sockets
    cannot take the server down. /v1/model names the run and data without their paths."""
    api.serve(run_dir, **options)


@command("tune", "Examples: cnnarena tune digits --model simple-2conv --trials 20",
         "  on many machines: cnnarena tune DATA --model fast --trials 100 --storage "
         "postgresql://user:pw@db/optuna --study-name fast-sweep (the same on every worker)")
def tune(data: str, model: str, **options) -> None:
    """Hyper-parameter search with Optuna (TPE, pruning on validation accuracy); each trial is a normal run under
    OUT/trials/. Workers started with the same --storage and --study-name share the search."""
    s = api.tune(data, model, **options)
    print(f"best trial {s['best_trial']}: validation accuracy {s['best_value']:.4f}, test accuracy "
          f"{s['best_test_accuracy']:.4f}; {', '.join(f'{k}={v}' for k, v in s['best_params'].items())}"
          f"\nrun directory: {s['best_run_dir']}\nreport: {s['report']}")
    parent = api.log_tune_to_mlflow(s)
    if parent is not None:
        print(f"MLflow parent run {parent}", file=sys.stderr)


@command("lr-find", "Example: cnnarena lr-find fashion-mnist --model simple-2conv --optimizer adam")
def lr_find(data: str, **options) -> None:
    """Learning-rate range test: the loss as the LR rises exponentially, with a suggested value."""
    r = api.lr_find(data, **options)
    print(f"suggested learning rate: {r.suggestion:.2e} (steepest descent); loss was lowest at "
          f"{r.min_loss_lr:.2e}\nplot: {r.plot}")


@command("models", "Examples: cnnarena models | cnnarena models resnet | cnnarena models 'efficientnet*' --all")
def models(pattern: str | None, all_models: bool) -> None:
    """The custom CNN presets, then pretrained backbones: alias, timm name, parameters, input size, weights."""
    print(api.model_text(pattern, all_models))


# What Ctrl-C prints, for the commands that resume where they stopped when run again; the others exit quietly.
RESUME_HINTS = {
    "train": "interrupted: the run directory keeps the last finished epoch; rerun the same command to resume",
    "study": "interrupted: the study directory keeps every finished run; rerun the same command to resume",
}
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def main() -> None:
    """`cnnarena ARGS` in this process, the one place that opts into process-wide settings (runtime.py)."""
    api.configure_for_command_line()
    sys.exit(run(sys.argv[1:]))


def command() -> None:
    """The `cnnarena` program: main(), then an exit without module teardown (runtime.exit_now)."""
    try:
        main()
    except SystemExit as done:
        api.exit_now(int(done.code or 0))


def run(args: list[str]) -> int:
    """Parse and run one command line; the exit code. Every mistake is one `error: ...` line and code 2.

    Click runs outside its standalone mode, so that its usage errors reach this function instead of being drawn
    as multi-line boxes, and Ctrl-C is not turned into a silent exit 130 before the resume hint is printed."""
    ctx = None
    try:
        with app.make_context("cnnarena", list(args) or ["--help"]) as ctx:
            app.invoke(ctx)
    except click.exceptions.Exit as e:  # --help, --version
        return e.exit_code
    except UserError as e:
        return _error(str(e))
    except click.ClickException as e:  # UsageError, BadParameter, NoSuchOption, MissingParameter...
        return _error(_usage_message(e))
    except KeyboardInterrupt:
        hint = RESUME_HINTS.get(getattr(ctx, "invoked_subcommand", None) or "")
        if hint:  # on a terminal the live progress bar has no newline yet
            print(("\n" if sys.stderr.isatty() else "") + hint, file=sys.stderr)
        return 130
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `cnnarena models --all | head`: the reader left; say nothing more
        api.silence_stdout()
        return 1
    except (MemoryError, RuntimeError, OSError) as e:
        message = api.resource_error(e, WRITE_ERRNOS)
        if message is None:
            raise
        return _error(message)
    return 0


def _error(message: str) -> int:
    print("error: " + " ".join(message.split("\n")), file=sys.stderr)
    return 2


def _usage_message(e: click.ClickException) -> str:
    """"No such option: --bogus" -> "no such option: --bogus (see `cnnarena train --help`)"."""
    message = e.format_message().strip().rstrip(".")
    if isinstance(e, click.NoSuchOption):  # click's "Possible options" share a letter or two
        close = difflib.get_close_matches(e.option_name, e.possibilities or [], n=1, cutoff=0.75)
        message = f"No such option: {e.option_name}" + (f" (did you mean {close[0]}?)" if close else "")
    if isinstance(e, click.MissingParameter) and isinstance(e.param, click.Argument):
        message = f"missing argument '{e.param.name}'"  # its name, not click's upper-case metavar
    if message[:2].istitle():  # "No such ...", "Missing ...", "Invalid ...": lower-case like our other errors
        message = message[0].lower() + message[1:]
    ctx = getattr(e, "ctx", None)
    return f"{message} (see `{ctx.command_path} --help`)" if ctx is not None else message


if __name__ == "__main__":
    command()
