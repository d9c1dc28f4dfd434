"""Command line: parse, call the library, print. No logic of its own.

Every mistake a user can make ends as one `error: ...` line on stderr and exit code 2.
"""

from __future__ import annotations

import difflib
import errno
import json
import sys
from pathlib import Path

import typer

from .errors import UserError

# rich_markup_mode=None: plain click help, so that defaults written like [adam] or [runs/DATA-MODEL-TIME] are
# shown as they are (Rich markup took them for style tags and dropped them); main() prints usage errors itself.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Custom CNN from scratch vs ImageNet-pretrained fine-tuning: train, compare, deploy.")

# Input sides `summary` accepts: far beyond any dataset cnnarena trains on, and the table is computed without
# allocating any weights or activations (see summary()).
MAX_SIDE = 4096
MAX_CLASSES = 100_000

DATA_HELP = ("digits, fashion-mnist, cifar10, hf:NAME[:CONFIG] (a Hugging Face dataset), or a path: class-folder "
             "directory, CSV of path,label, cifar-10-batches-py, a save_to_disk or Parquet folder")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"cnnarena {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


def _example(*lines: str) -> str:
    """An epilog kept as written (\\b: click does not rewrap it), so examples can be copied whole."""
    return "\b\n" + "\n".join(lines)


# The config dataclasses' field defaults, as _default_help reads them from their source (filled on first use).
_SOURCE_DEFAULTS: dict[str, dict] = {}


def _default_help(key: str, text: str = "", *, study: bool = False, base: str | None = None) -> str:
    """`text [default; fast: ...; backbones: ...]`: what option `key` will be when not given, built from the code
    so that --help cannot go stale. `train`: the TrainConfig/RunConfig default under the default model's recipe,
    then each model family whose recipe (models/recipes.py) differs; `study=True`: the default study's value
    (study/defaults.py), then StudyConfig's where a --config file gets another. The dataclasses are read from
    their source, not imported: train/config.py imports torch, seconds every command line would pay for its
    help. `base` names a default that is not a literal (augment's empty AugmentConfig)."""
    import ast

    from .models.recipes import recipe_overrides
    from .study.defaults import DEFAULT_STUDY

    if not _SOURCE_DEFAULTS:
        for module, name in (("train/config.py", "TrainConfig"), ("config.py", "RunConfig"),
                             ("study/config.py", "StudyConfig")):
            try:
                tree = ast.parse((Path(__file__).parent / module).read_text())
            except OSError:  # installed without its sources: the help names no defaults
                tree = ast.Module(body=[], type_ignores=[])
            fields = _SOURCE_DEFAULTS.setdefault(name, {})
            for stmt in (s for c in tree.body if isinstance(c, ast.ClassDef) and c.name == name for s in c.body):
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                    try:
                        fields[stmt.target.id] = ast.literal_eval(stmt.value)
                    except ValueError:  # field(default_factory=...)
                        pass

    def show(value, exp: bool = False) -> str:
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, list):  # study models are names or {name: options}; LRs all alike: 1e-4,...,1e-1
            exp = any("e" in show(v) for v in value if isinstance(v, float))
            return ",".join(next(iter(v)) if isinstance(v, dict) else show(v, exp) for v in value) or "none"
        if isinstance(value, float):  # 1e-3, 5e-4, 0.2, 0.01
            mantissa, exponent = f"{value:e}".split("e")
            short = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
            return short if exp or len(short) < len(f"{value:g}") else f"{value:g}"
        return str(value)

    def epochs(values: dict) -> str:
        frozen = values.get("freeze_epochs") or 0
        return f"{frozen} frozen + {values['epochs']}" if frozen else str(values["epochs"])

    missing = object()
    if study:
        if key == "epochs":  # each model's own, in the default study
            runs = [f"{next(iter(m))} {epochs(m[next(iter(m))])}" for m in DEFAULT_STUDY["models"]
                    if isinstance(m, dict) and "epochs" in m[next(iter(m))]]
            return f"{text} [default study: {', '.join(runs)}]" if runs else text
        configured = _SOURCE_DEFAULTS["StudyConfig"].get(key, {"lrs": [], "fractions": [1.0]}.get(key, missing))
        default = DEFAULT_STUDY.get(key, configured)
        if default is missing:
            return text
        from .study.defaults import AUTO_DATA_ONLY

        parts = [show(default)]
        if configured is not missing and show(configured) != parts[0]:
            other = "with your DATA or --config" if key in AUTO_DATA_ONLY else "with --config"
            parts = [f"default study: {parts[0]}", f"{other}: {show(configured)}"]
        return f"{text} [{'; '.join(parts)}]".strip()
    groups = recipe_overrides()
    first = groups.pop(next(iter(groups)))
    defaults = {**_SOURCE_DEFAULTS["RunConfig"], **_SOURCE_DEFAULTS["TrainConfig"], **first}
    if key not in defaults and base is None:
        return text

    def shown(recipe: dict) -> str:
        values = {**defaults, **recipe}
        if key == "epochs":
            return epochs(values)
        return show(values[key]) if key in values else str(base)

    default_text = shown({})
    others: dict[str, list[str]] = {}  # value -> the families that get it
    for name, recipe in groups.items():
        if shown(recipe) != default_text:
            others.setdefault(shown(recipe), []).append(name)
    parts = [default_text] + [f"{', '.join(names)}: {value}" for value, names in others.items()]
    return f"{text} [{'; '.join(parts)}]".strip()


def _check_out_dir(path: Path, option: str = "--out") -> None:
    """A directory to create or reuse: not an existing file, and not inside one."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a directory: give a new or existing directory")
    _check_parents(path, option)


def _check_out_file(path: Path, option: str) -> None:
    """A file to create or overwrite: not an existing directory, and not inside a file."""
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory: give a file name, e.g. {path / 'out'}")
    _check_parents(path, option)


def _check_parents(path: Path, option: str) -> None:
    for parent in path.parents:  # the nearest one that exists must be a directory
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {path}: {parent} is a file, not a directory")
            return


def _csv_ints(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated whole numbers, got {value!r}") from None


@app.command(epilog=_example("Example: cnnarena train fashion-mnist --model fast --epochs 12 --out runs/fast"))
def train(
    data: str = typer.Argument(..., help=DATA_HELP),
    model: str | None = typer.Option(None, "--model", "-m", help="custom preset (simple-2conv, fast, ...), "
                                        "a layer-spec YAML/JSON, or a pretrained backbone (see `cnnarena models`)"),
    epochs: int | None = typer.Option(None, help=_default_help("epochs", "maximum epochs")),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help=_default_help("batch_size")),
    lr: float | None = typer.Option(None, help=_default_help("lr", "learning rate")),
    optimizer: str | None = typer.Option(None, help=_default_help("optimizer", "adam | adamw | sgd")),
    momentum: float | None = typer.Option(None, help=_default_help("momentum", "SGD momentum")),
    nesterov: bool | None = typer.Option(None, "--nesterov/--no-nesterov", help=_default_help(
        "nesterov", "SGD Nesterov momentum")),
    weight_decay: float | None = typer.Option(None, help=_default_help("weight_decay")),
    schedule: str | None = typer.Option(None, help=_default_help(
        "schedule", "constant | step | exponential | cosine | onecycle | linear")),
    warmup_epochs: float | None = typer.Option(None, help=_default_help("warmup_epochs", "linear warm-up epochs")),
    label_smoothing: float | None = typer.Option(None, help=_default_help("label_smoothing")),
    class_weights: str | None = typer.Option(None, help="class weights in the loss: auto (inverse frequency) | none "
                                             "| a YAML/JSON file of class: weight [none]"),
    sampler: str | None = typer.Option(None, help="shuffle | balanced (every class equally likely in each batch) "
                                       "[shuffle]"),
    grad_clip: float | None = typer.Option(None, help="clip the global gradient norm to this"),
    early_stopping: int | None = typer.Option(None, help="patience in epochs; restores the best epoch"),
    reduce_on_plateau: int | None = typer.Option(None, help="patience in epochs before halving the LR"),
    monitor: str | None = typer.Option(None, help="val_loss | val_accuracy: what 'best epoch' means"),
    augment: str | None = typer.Option(None, help=_default_help(
        "augment", "none | flip | light | standard | strong, or a list like 'flip,translate=2,rotation=10'",
        base="none")),
    tta: bool | None = typer.Option(None, "--tta/--no-tta", help=_default_help("tta", "flip test-time augmentation")),
    seed: int | None = typer.Option(None, help=_default_help("seed", "training seed")),
    deterministic: bool | None = typer.Option(None, "--deterministic/--no-deterministic"),
    sync_bn: bool | None = typer.Option(None, "--sync-bn/--no-sync-bn", help="under torchrun on GPUs: BatchNorm "
                                        "statistics over the whole batch (SyncBatchNorm) [off]"),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="bf16 autocast (default: on CUDA only)"),
    compile: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile the training step"),
    tensorboard: bool | None = typer.Option(None, "--tensorboard/--no-tensorboard", help="TensorBoard event files "
                                            "in the run directory (tensorboard --logdir runs) [on]"),
    mlflow: str | None = typer.Option(None, "--mlflow", help="also log the run to MLflow, each epoch as it ends: a "
                                      "tracking URI, or 'local' for sqlite:///mlflow.db here (artefacts in ./mlruns)"),
    device: str | None = typer.Option(None, help=_default_help("device", "auto | cpu | cuda | mps")),
    max_minutes: float | None = typer.Option(None, help="time limit: stop after the epoch that crosses it"),
    budget: str | None = typer.Option(None, help="wall-clock budget of the training, e.g. 20m, 90s, 1.5h: epochs "
                                      "are planned to fit (schedules end on time) and training stops on time with "
                                      "its best weights"),
    max_memory: str | None = typer.Option(None, help="peak memory: auto (on a CPU a share of the free memory, at "
                                          "most 4GB) | none | a size like 3GB; a larger batch runs as micro-batches "
                                          "(gradient accumulation) [auto]"),
    pretrained: bool | None = typer.Option(None, "--pretrained/--no-pretrained",
                                              help="ImageNet weights for backbones (default on; never silently off)"),
    weights: Path | None = typer.Option(None, help="backbone weights file (safetensors or state dict)"),
    input_size: int | None = typer.Option(None, help="resolution a pretrained backbone runs at, e.g. 96"),
    head_hidden: str | None = typer.Option(None, help="hidden dense layers of a backbone's head, e.g. 256,128"),
    head_dropout: float | None = typer.Option(None, help="dropout in the head"),
    freeze_epochs: int | None = typer.Option(None, help=_default_help(
        "freeze_epochs", "fine-tuning: epochs with the backbone frozen first")),
    unfreeze: str | None = typer.Option(None, help="then unfreeze the last K stages, or 'all'"),
    finetune_lr_scale: float | None = typer.Option(None, help=_default_help(
        "finetune_lr_scale", "phase-2 LR = lr × this")),
    layer_decay: float | None = typer.Option(None, help="phase 2: layer-wise LR decay per stage"),
    finetune_bn: str | None = typer.Option(None, help=_default_help(
        "finetune_bn", "BatchNorm when fine-tuning (phase 2, or the whole run with --freeze-epochs 0): frozen "
        "(keeps ImageNet statistics, Keras' advice) | train")),
    finetune_warmup: float | None = typer.Option(None, help="phase 2: linear LR warm-up epochs [as --warmup-epochs]"),
    feature_cache: bool | None = typer.Option(None, "--feature-cache/--no-feature-cache",
                                              help=_default_help(
        "feature_cache", "no augmentation: compute the frozen part's output once")),
    data_dir: Path | None = typer.Option(None, help="where datasets live (else $CNNARENA_DATA, system, cache)"),
    image_size: int | None = typer.Option(None, help="folder/CSV images are resized to this once [64]"),
    grayscale: bool | None = typer.Option(None, "--grayscale/--rgb", help="force channel mode for folders"),
    class_map: Path | None = typer.Option(None, help="YAML/JSON mapping folder names to class names"),
    strict: bool | None = typer.Option(None, "--strict/--lenient", help="unreadable images are an error"),
    image_column: str | None = typer.Option(None, help="a Hugging Face dataset's image column [its Image feature]"),
    label_column: str | None = typer.Option(None, help="a Hugging Face dataset's label column [its ClassLabel]"),
    split: Path | None = typer.Option(None, help="reuse this split manifest (split.json of another run)"),
    val_frac: float | None = typer.Option(None, help=_default_help("val_frac", "validation share")),
    test_frac: float | None = typer.Option(None, help=_default_help(
        "test_frac", "test share when there is no official test set")),
    split_seed: int | None = typer.Option(None, help=_default_help("split_seed")),
    fraction: float | None = typer.Option(None, help="train on this stratified share of the training set"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run directory [runs/DATA-MODEL-TIME]; "
                                       "an unfinished one is resumed"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of any of these options"),
) -> None:
    """Train one model and evaluate it on the test split; everything lands in the run directory.

    Under `torchrun --nproc_per_node N -m cnnarena train ...` the N processes train one model data-parallel
    (DistributedDataParallel: gloo on CPUs, NCCL on GPUs); rank 0 writes the run directory."""
    values = {k: v for k, v in locals().items() if k not in ("config", "mlflow")}
    from .config import build_config, load_config_file
    from .evaluate.metrics import format_per_class
    from .run import default_run_dir, train_run
    from .train import distributed

    values["head_hidden"] = _csv_ints(head_hidden)
    for key in ("weights", "data_dir", "class_map", "split", "out"):
        values[key] = str(values[key]) if values[key] is not None else None
    cfg = build_config(load_config_file(config), values)
    uri = _mlflow_uri(mlflow)
    ranks = distributed.start(cfg.train.device)
    try:
        run_dir = distributed.from_main(Path(cfg.out) if cfg.out else default_run_dir(cfg))  # one clock names it
        _check_out_dir(run_dir)
        live = []
        if uri is not None:
            from .tracking.mlflow_live import LiveRun

            live = [LiveRun(run_dir, uri)]
        try:
            metrics = train_run(cfg, run_dir, callbacks=live)
        finally:
            for tracker in live:
                tracker.close()
    finally:
        distributed.stop()
    if ranks is not None and not ranks.is_main:
        return
    if uri is not None:
        from .tracking.mlflow_log import log_run

        print(f"MLflow run {log_run(run_dir, uri)} at {uri}", file=sys.stderr)
    print(format_per_class(metrics))
    print(f"\ntest accuracy {metrics['test_accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
          f"test loss {metrics['test_loss']:.4f}  ({metrics['epochs_run']} epochs, {metrics['train_seconds']:.1f}s "
          f"training)\nrun directory: {run_dir}")


@app.command(epilog=_example("Example: cnnarena evaluate runs/fast --data ./new-photos --no-tta"))
def evaluate(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    data: str | None = typer.Option(None, help="evaluate on this dataset instead (same classes; read with the "
                                    "run's image size, channels and class map): the run's own dataset (its "
                                    "config.yaml spec) is evaluated on the run's test split (split.json), "
                                    "another on its official test split, or on all of its images when it has none"),
    tta: bool | None = typer.Option(None, "--tta/--no-tta", help="flip test-time augmentation (default: the "
                                    "run's own setting, tta in its config.yaml, as in its metrics.json)"),
) -> None:
    """Re-evaluate a saved run's model on its test split (or on another dataset with the same classes).

    With no options this reproduces the test accuracy of the run's metrics.json; results go to evaluation.json.
    """
    from .evaluate.metrics import format_per_class
    from .evaluate.reevaluate import reevaluate

    metrics = reevaluate(run_dir, data=data, tta=tta)
    print(f"evaluated on {metrics['test_set']}; test-time augmentation "
          f"{'on' if metrics['tta'] else 'off'} (from {metrics['tta_from']})\n")
    print(format_per_class(metrics))
    print(f"\ntest accuracy {metrics['test_accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
          f"test loss {metrics['test_loss']:.4f}")


@app.command(epilog=_example("Example: cnnarena inspect ./RealWaste --out inspect-realwaste"))
def inspect(
    data: str = typer.Argument(..., help=DATA_HELP),
    out: Path = typer.Option(Path("inspect"), "--out", "-o", help="where the PNG charts go"),
    data_dir: Path | None = typer.Option(None, help="where datasets live"),
    image_size: int | None = typer.Option(None, help="folder/CSV images are resized to this once [64]"),
    class_map: Path | None = typer.Option(None, help="YAML/JSON mapping folder names to class names"),
    strict: bool = typer.Option(False, "--strict", help="unreadable images are an error"),
    as_json: bool = typer.Option(False, "--json", help="print the statistics as JSON"),
) -> None:
    """Explore a dataset: class counts, imbalance, image sizes, a class chart and sample images."""
    from .data.inspect import describe, format_description, write_plots
    from .data.sources import load_source

    _check_out_dir(out)
    source = load_source(data, data_dir=data_dir, image_size=image_size, class_map=class_map, strict=strict)
    desc = describe(source)
    paths = write_plots(source, out)
    print(json.dumps(desc, indent=1) if as_json else format_description(desc))
    print("\n".join(f"wrote {p}" for p in paths))


@app.command(epilog=_example("Example: cnnarena doctor ./RealWaste --run runs/fast --strict"))
def doctor(
    data: str = typer.Argument(..., help=DATA_HELP),
    split: Path | None = typer.Option(None, help="count leakage across this split manifest (a split.json)"),
    run_dir: Path | None = typer.Option(None, "--run", help="count leakage across this run directory's split"),
    study_dir: Path | None = typer.Option(None, "--study", help="count leakage across this study's split"),
    as_json: bool = typer.Option(False, "--json", help="print the whole report as one JSON document on stdout"),
    strict: bool = typer.Option(False, "--strict", help="exit 1 when anything serious is found (leakage, label "
                                "conflicts, unreadable files)"),
    label_issues: bool = typer.Option(True, "--label-issues/--no-label-issues",
                                      help="find mislabeled images with k-fold out-of-sample predictions [on]"),
    near: bool = typer.Option(True, "--near/--exact-only", help="look for near-duplicates too [on]"),
    folds: int = typer.Option(5, min=2, max=20, help="folds of the out-of-sample predictions"),
    out: Path | None = typer.Option(None, "--out", "-o", help="where the report and its grids go "
                                    "[CACHE/doctor/NAME, beside the data's cache]"),
    data_dir: Path | None = typer.Option(None, help="where datasets live"),
    image_size: int | None = typer.Option(None, help="folder/CSV images are resized to this once [64]"),
    class_map: Path | None = typer.Option(None, help="YAML/JSON mapping folder names to class names"),
) -> None:
    """Find what is wrong in a dataset: unreadable and unusual files, imbalance, exact and near-duplicates (within
    a class, across classes, across a split's parts) and mislabeled images."""
    from . import runtime
    from .data.doctor import all_images, examine, summary_lines
    from .data.sources import load_source
    from .report.doctor_report import write_doctor_report

    given = [(name, path) for name, path in (("--split", split), ("--run", run_dir), ("--study", study_dir)) if path]
    if len(given) > 1:
        raise UserError(f"give one of --split, --run and --study, not {' and '.join(n for n, _ in given)}")
    manifest_path = None
    if given:
        name, path = given[0]
        manifest_path = path if name == "--split" else path / "split.json"
        if not manifest_path.is_file():
            raise UserError(f"{name} {path}: no split manifest at {manifest_path}")
    if out is not None:
        _check_out_dir(out)
    source = load_source(data, data_dir=data_dir, image_size=image_size, class_map=class_map)
    split_ids = _read_split_ids(manifest_path) if manifest_path else None
    report = examine(source, split_ids=split_ids, root=source.root, label_issues=label_issues, near=near,
                     folds=folds)
    report["dataset"]["spec"] = data
    target = out or runtime.cache_dir() / "doctor" / source.name
    paths = write_doctor_report(report, all_images(source)[0], target)
    if as_json:
        print(json.dumps(report))
    else:
        print("\n".join(summary_lines(report)))
    print(f"report: {paths[1]} (and {', '.join(p.name for p in paths if p != paths[1])})", file=sys.stderr)
    if strict and report["serious"]:
        print(f"error: serious findings (--strict): {'; '.join(report['serious'])}", file=sys.stderr)
        raise typer.Exit(1)


def _read_split_ids(path: Path) -> dict[str, list[str]]:
    try:
        manifest = json.loads(path.read_text())
        return {part: list(manifest[part]) for part in ("train", "val", "test")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read the split manifest {path}: {e}") from None


@app.command(epilog=_example("Example: cnnarena summary simple-2conv --input 1x28x28 --classes 10"))
def summary(
    model: str = typer.Argument(..., help="custom preset, layer-spec file or pretrained backbone"),
    input: str = typer.Option("3x32x32", "--input", help="C×H×W of the data, e.g. 1x28x28"),
    classes: int = typer.Option(10, help="number of classes"),
    depth: int = typer.Option(1, help="how many module levels to expand (pretrained nets are deep)"),
    input_size: int | None = typer.Option(None, help="pretrained backbones: resolution they run at"),
) -> None:
    """A Keras-style table: layer, output shape, parameters, with trainable / non-trainable totals."""
    try:
        c, h, w = (int(v) for v in input.lower().replace("×", "x").split("x"))
    except ValueError:
        raise UserError(f"--input must look like 3x32x32, got {input!r}") from None
    if c not in (1, 3):
        raise UserError(f"--input {input}: channels must be 1 (grayscale) or 3 (RGB), got {c}")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise UserError(f"--input {input}: height and width must be 1 to {MAX_SIDE} pixels")
    if not 1 <= classes <= MAX_CLASSES:
        raise UserError(f"--classes must be 1 to {MAX_CLASSES:,}, got {classes}")
    if input_size is not None and not 1 <= input_size <= MAX_SIDE:
        raise UserError(f"--input-size must be 1 to {MAX_SIDE} pixels, got {input_size}")
    import torch

    from .models.registry import create_model
    from .models.summary import summarize

    def table() -> str:
        net = create_model(model, num_classes=classes, in_chans=c, data_size=(h, w),
                           classes=[str(i) for i in range(classes)], pretrained=False, input_size=input_size)
        return summarize(net, (c, h, w), depth=depth)

    try:  # shapes and counts only: on the meta device no weight or activation is allocated, whatever the size
        with torch.device("meta"):
            text = table()
    except (NotImplementedError, RuntimeError):  # an operation without a meta implementation: compute it for real
        text = table()
    print(text)


@app.command(epilog=_example("Example: cnnarena predict runs/fast photos/ cat.jpg --top-k 3 --format csv "
                             "--output preds.csv"))
def predict(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    paths: list[Path] = typer.Argument(..., help="image files and/or folders (searched recursively)"),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="classes shown per image"),
    fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write to this file instead of the screen"),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1, help="images per forward pass"),
) -> None:
    """Top-k labels for image files, decoded exactly like the training data; unreadable files are reported."""
    from .evaluate.predict import FORMATS, load_run_model, predict_files, render, unreadable_summary

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}: use {', '.join(FORMATS)}")
    if output is not None:
        _check_out_file(output, "--output")
    rows = predict_files(load_run_model(run_dir), paths, top=top_k, batch_size=batch_size)
    if not rows:
        raise UserError(f"no image files found in {', '.join(map(str, paths))}")
    bad = [r for r in rows if r.error]
    if len(bad) == len(rows):
        raise UserError(unreadable_summary(bad, len(rows)))
    text = render(rows, fmt)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text if text.endswith("\n") else text + "\n")
        print(f"wrote {len(rows) - len(bad)} predictions to {output}", file=sys.stderr)
    else:
        print(text)
    if bad:
        print(unreadable_summary(bad, len(rows)), file=sys.stderr)


@app.command(epilog=_example("Example: cnnarena explain runs/fast photos/ cat.jpg --method gradcam++ "
                             "--out explain-fast"))
def explain(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    paths: list[Path] = typer.Argument(..., help="image files and/or folders (searched recursively)"),
    method: str = typer.Option("gradcam", help="gradcam | gradcam++ | hirescam | xgradcam | layercam | eigencam | "
                               "scorecam | ablationcam (the last two run the model once per channel: slow)"),
    target: str | None = typer.Option(None, help="explain this class (name or index) [each image's predicted class]"),
    layer: str | None = typer.Option(None, help="the layer whose feature map is explained, as named in `cnnarena "
                                     "summary` [the last one with at least 4x4 cells]"),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="classes shown per image"),
    out: Path | None = typer.Option(None, help="directory for the PNGs and explanations.json [explain/RUN-NAME]"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | mps"),
) -> None:
    """Heat maps (class activation maps, by the grad-cam library) of where the model looks: a PNG per image (input,
    overlay, top classes), grid.png, and explanations.json."""
    from .evaluate.predict import check_run_dir, load_run_model
    from .explain.cam import check_method

    check_run_dir(run_dir)
    check_method(method)
    out = out or Path("explain") / Path(run_dir).resolve().name
    _check_out_dir(out, "--out")
    from .explain.images import explain_files
    from .train.loop import resolve_device

    model = load_run_model(run_dir).to(resolve_device(device))
    summary = explain_files(model, paths, out, method=method, target=target, layer=layer, top=top_k)
    done = [r for r in summary["images"] if not r["error"]]
    bad = [r for r in summary["images"] if r["error"]]
    for r in done:
        best = r["predictions"][0]
        print(f"{r['path']}: {best['label']} {best['probability']:.3f} -> {out / r['png']}")
    print(f"{len(done)} heat maps ({method} of {summary['layer']}) in {out}; grid: {out / summary['grid']}",
          file=sys.stderr)
    if bad:
        from .evaluate.predict import Prediction, unreadable_summary

        print(unreadable_summary([Prediction(r["path"], error=r["error"]) for r in bad], len(summary["images"])),
              file=sys.stderr)


@app.command(epilog=_example("Examples: cnnarena export runs/fast --format onnx --output deploy/fast.onnx",
                             "  cnnarena export runs/fast --int8  (RUN_DIR/model.int8.onnx; serve --backend onnx-int8)",
                             "  cnnarena export runs/fast --format torchscript"))
def export(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx | torchscript (torch.jit.load) | pt2 "
                            "(torch.export's archive, torch.export.load)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="the file [RUN_DIR/model.onnx, model.int8.onnx, "
                                       "model.pt or model.pt2]"),
    int8: bool = typer.Option(False, "--int8", help="ONNX Runtime static int8 quantization, calibrated on training "
                              "images; reports int8 vs float test accuracy and images/s"),
    max_drop: float = typer.Option(1.0, min=0, help="with --int8: refuse when test accuracy drops by more points"),
    calibration: int = typer.Option(256, min=1, help="with --int8: training images to calibrate on"),
    timing: float = typer.Option(2.0, min=0.1, help="with --int8: seconds each model is timed at each batch size "
                                 "and thread count (longer is steadier)"),
    exporter: str = typer.Option("torchscript", help="ONNX exporter: torchscript | dynamo (needs onnxscript)"),
    opset: int = typer.Option(17, help="ONNX opset (dynamo uses at least 18)"),
) -> None:
    """Export the whole model (input [0,1] N×C×H×W) with a model card, checked against PyTorch: ONNX (float, or int8
    with --int8), TorchScript or a torch.export archive."""
    from .evaluate.predict import check_run_dir
    from .export.onnx import EXPORTERS, export_onnx
    from .export.torchscript import FORMATS

    if fmt not in ("onnx", *FORMATS):
        raise UserError(f"unknown --format {fmt!r}: use onnx, {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise UserError(f"--int8 quantizes ONNX models: not with --format {fmt}")
    if fmt in FORMATS:
        from .export.torchscript import card_path_of, export_pytorch

        check_run_dir(run_dir)
        if output is not None:
            _check_out_file(output, "--output")
        path, card = export_pytorch(run_dir, output, fmt)
        diffs = ", ".join(f"{d:.1e} at batch {n}" for n, d in card["check"]["max_abs_diff"].items())
        print(f"wrote {path} and {card_path_of(path)}\ncheck passed: load with "
              f"{card['load']}; logits match the run's model (max difference {diffs})")
        return
    if exporter not in EXPORTERS:
        raise UserError(f"unknown --exporter {exporter!r}: use {' or '.join(EXPORTERS)}")
    check_run_dir(run_dir)  # before importing torch: a mistyped path fails in a blink
    if output is not None:
        _check_out_file(output, "--output")
    low, high = _opset_range(exporter)
    if not low <= opset <= high:
        raise UserError(f"--opset {opset} is not supported by the installed torch's {exporter} exporter: "
                        f"use {low} to {high}" + (" (values below 18 mean 18)" if exporter == "dynamo" else ""))
    if int8:
        _export_int8(run_dir, output, exporter, opset, max_drop, calibration, timing)
        return
    result = export_onnx(run_dir, output, exporter=exporter, opset=opset)
    check = result.card["check"]
    diffs = ", ".join(f"{d:.1e} at batch {n}" for n, d in check["max_abs_diff"].items())
    print(f"wrote {result.onnx_path} (opset {result.card['opset']}) and {result.card_path}\n"
          f"check passed: batch axis {check['batch_axis']!r} is dynamic; ONNX Runtime logits match PyTorch "
          f"within {check['tolerance']:.0e} (max difference {diffs})")


def _export_int8(run_dir: Path, output: Path | None, exporter: str, opset: int, max_drop: float,
                 calibration: int, timing: float) -> None:
    import tempfile

    from .export.onnx import export_onnx
    from .export.quantize import INT8_FILE, quantize_run

    path = output or run_dir / INT8_FILE
    with tempfile.TemporaryDirectory(prefix="cnnarena-export-") as tmp:  # the float model is a step, not a result
        result = export_onnx(run_dir, Path(tmp) / "model.onnx", exporter=exporter, opset=opset)
        card = quantize_run(run_dir, result.onnx_path, path, max_drop=max_drop, calibration=calibration,
                            speed_seconds=timing)
    acc, speed = card["accuracy"], card["images_per_second"]
    size = card["file_bytes"]
    print(f"wrote {path} (int8, {size['int8'] / 1e6:.2f} MB; float {size['float'] / 1e6:.2f} MB)\n"
          f"test accuracy: int8 {acc['int8']:.4f}, float {acc['float']:.4f} ({acc['drop_points']:+.2f} points "
          f"lost, at most {acc['max_drop_points']:g}) on {acc['test_images']} images")
    stem = card["quantization"]["stem"]
    if stem["measured"]:
        print(f"first convolution: kept in {'float' if stem['float'] else 'int8'}, the faster of the two")
    threads = card["intra_op_threads"]
    for b in speed["int8"]:
        print(f"batch {b:>2}: int8 {speed['int8'][b]:,.0f} images/s ({_threads(threads['int8'][b])}), float "
              f"{speed['float'][b]:,.0f} ({_threads(threads['float'][b])}): {card['speedup'][b]:.2f}x "
              f"({card['speedup_default_threads'][b]:.2f}x both on ONNX Runtime's default threads)")


def _threads(count: int) -> str:
    return "default threads" if count == 0 else f"{count} thread" + ("s" if count > 1 else "")


def _mlflow_uri(value: str | None) -> str | None:
    """--mlflow's tracking URI, checked (mlflow importable, the store reachable and set up) before anything trains;
    under torchrun by rank 0 alone, the one that logs."""
    if value is None:
        return None
    import logging
    import os

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


def _opset_range(exporter: str) -> tuple[int, int]:
    """The ONNX opsets the installed torch can export with `exporter` (torchscript stops earlier than dynamo)."""
    from .export.onnx import supported_opsets

    return supported_opsets(exporter)


@app.command(epilog=_example("Example: cnnarena serve runs/fast --port 8000, then open http://127.0.0.1:8000/"))
def serve(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 for every interface)"),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port"),
    backend: str = typer.Option("onnx", help="onnx (ONNX Runtime) | onnx-int8 (the model `export --int8` wrote) | "
                                "torch (PyTorch eager)"),
    max_batch: int = typer.Option(32, min=1, help="micro-batching: most images per inference"),
    max_wait_ms: float = typer.Option(2.0, min=0, help="micro-batching: longest wait for a batch to fill"),
    max_body_mb: float = typer.Option(10.0, min=0.001, help="largest request body in MiB (413 above)"),
    max_pixels: int = typer.Option(40_000_000, min=1, help="largest image in pixels (413 above)"),
    max_files: int = typer.Option(16, min=1, help="most images per request"),
    top_k: int = typer.Option(5, min=1, help="classes returned per image unless ?top_k= says otherwise"),
    body_timeout: float = typer.Option(15.0, min=0.1, help="seconds an upload may send nothing before it is cut "
                                       "off (408)"),
    max_connections: int = typer.Option(64, min=1, help="requests handled at once; more get 503 at once"),
    log_level: str = typer.Option("info", help="uvicorn log level: critical | error | warning | info | debug"),
) -> None:
    """HTTP API (POST /v1/predict, POST /v1/explain, GET /v1/health, GET /v1/model) and a web page with webcam
    mode and heat maps at /.

    Limits: a request body of at most --max-body-mb (413, refused from Content-Length before any byte is read),
    --max-files images of at most --max-pixels each (413), headers of at most 16 KiB (uvicorn's h11 limit, 400),
    an upload that stalls for --body-timeout seconds (408), --max-connections requests at once (503), idle
    keep-alive connections closed after 5 s. /v1/model names the run and data without their paths.
    """
    from .evaluate.predict import check_run_dir
    from .serve.address import check_listen, check_log_level

    log_level = check_log_level(log_level)
    check_run_dir(run_dir)
    check_listen(host, port)  # before the model loads (and may be exported): uvicorn would only log and exit 3
    import uvicorn

    from .serve.app import create_app

    web = create_app(run_dir, backend=backend, max_batch=max_batch, max_wait_ms=max_wait_ms,
                     max_body_bytes=int(max_body_mb * 1024 * 1024), max_pixels=max_pixels, max_files=max_files,
                     top_k=top_k, body_timeout_s=body_timeout)
    print(f"serving {run_dir} with {backend} at http://{host}:{port}/ (Ctrl+C stops)", file=sys.stderr)
    uvicorn.run(web, host=host, port=port, log_level=log_level, access_log=False, limit_concurrency=max_connections,
                timeout_keep_alive=5, h11_max_incomplete_event_size=16 * 1024)


def _csv_floats(value: str | None, name: str) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} expects comma-separated numbers, got {value!r}") from None


@app.command(epilog=_example("Examples:",
                             "  cnnarena study   # the default study (Fashion-MNIST if present, else digits)",
                             "  cnnarena study fashion-mnist --models simple-2conv,fast,efficientnet_lite0 \\",
                             "      --lrs 1e-4,1e-3,1e-2,1e-1 --seeds 3 --fractions 0.1,0.25,0.5,1"))
def study(
    data: str = typer.Argument("auto", help=DATA_HELP + "; auto = Fashion-MNIST when present, else digits"),
    models: str | None = typer.Option(None, help=_default_help("models", "comma-separated models", study=True)),
    seeds: int | None = typer.Option(None, help=_default_help(
        "seeds", "train every model with this many seeds", study=True)),
    fractions: str | None = typer.Option(None, help=_default_help(
        "fractions", "training-set fractions for learning curves, e.g. 0.1,0.5,1", study=True)),
    lrs: str | None = typer.Option(None, help=_default_help("lrs", "learning-rate comparison", study=True)),
    lr_models: str | None = typer.Option(None, help="models that get the LR comparison [the first]"),
    lr_epochs: int | None = typer.Option(None, help=_default_help(
        "lr_epochs", "epochs per LR-comparison run", study=True)),
    lr_fraction: float | None = typer.Option(None, help=_default_help(
        "lr_fraction", "share of the training set for the LR comparison", study=True)),
    epochs: int | None = typer.Option(None, help=_default_help("epochs", "override every model's epochs", study=True)),
    max_minutes: float | None = typer.Option(None, help="time limit per run: stop after the epoch that crosses it"),
    budget: str | None = typer.Option(None, help="wall-clock budget of the study's training on the whole training "
                                      "set, e.g. 20m, shared equally by the models (and seeds)"),
    budget_per_model: str | None = typer.Option(None, help=_default_help(
        "budget_per_model", "or this budget for each model's run, e.g. 5m", study=True)),
    max_memory: str | None = typer.Option(None, help="peak memory of each run: auto | none | e.g. 3GB [auto]"),
    tensorboard: bool | None = typer.Option(None, "--tensorboard/--no-tensorboard", help="TensorBoard event files "
                                            "in every run directory (tensorboard --logdir OUT) [on]"),
    mlflow: str | None = typer.Option(None, "--mlflow", help="also log to MLflow, one parent run with a child per "
                                      "run: a tracking URI, or 'local' for sqlite:///mlflow.db here"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda"),
    data_dir: Path | None = typer.Option(None, help="where datasets live"),
    image_size: int | None = typer.Option(None, help="folder/CSV images are resized to this once [64]"),
    measure_seconds: float | None = typer.Option(None, help=_default_help(
        "measure_seconds", "seconds per latency/throughput measurement", study=True)),
    storage: str | None = typer.Option(None, help="share the runs with other workers through this Optuna storage "
                                       "(e.g. postgresql://...; every worker runs the same command)"),
    study_name: str | None = typer.Option(None, help="with --storage: the Optuna study [cnnarena-study-OUT]"),
    heartbeat: float = typer.Option(10.0, min=1, help="with --storage: seconds between a worker's heartbeats; a "
                                    "run silent for 3 of them is retried by another worker"),
    report_only: bool = typer.Option(False, "--report-only", help="write the comparison and report from the "
                                     "finished runs; train nothing"),
    out: Path | None = typer.Option(None, "--out", "-o", help="study directory [studies/default]; rerun to resume"),
    config: Path | None = typer.Option(None, "--config", "-c", help="study YAML: data, models (with per-model "
                                       "options), seeds, fractions, lrs, and run options for all models"),
) -> None:
    """Train several models on one shared split and write the comparison (Markdown, CSV, JSON, HTML report)."""
    from .study.config import build_study_config, load_study_file
    from .study.runner import check_models, run_study

    cli_values = {
        "data": None if data == "auto" and config else data,
        "models": [m.strip() for m in models.split(",") if m.strip()] if models else None,
        "seeds": seeds, "fractions": _csv_floats(fractions, "--fractions"), "lrs": _csv_floats(lrs, "--lrs"),
        "lr_models": [m.strip() for m in lr_models.split(",")] if lr_models else None,
        "lr_epochs": lr_epochs, "lr_fraction": lr_fraction, "epochs": epochs, "max_minutes": max_minutes,
        "budget": budget, "budget_per_model": budget_per_model, "max_memory": max_memory,
        "tensorboard": tensorboard, "device": device, "data_dir": str(data_dir) if data_dir else None,
        "image_size": image_size,
        "measure_seconds": measure_seconds, "out": str(out) if out else None,
    }
    file_values = load_study_file(config) if config else default_study_values(data)
    if budget is not None or budget_per_model is not None:  # one budget setting: the command line's wins
        file_values = {k: v for k, v in file_values.items() if k not in ("budget", "budget_per_model")}
    study_cfg = build_study_config(file_values, cli_values)
    uri = _mlflow_uri(mlflow)
    _check_out_dir(Path(study_cfg.out))
    check_models(study_cfg)
    if report_only:
        from .study.runner import missing_runs

        missing = missing_runs(study_cfg)
        if missing:
            raise UserError(f"--report-only: {len(missing)} run(s) not finished yet, first {missing[0]}")
    live = None
    if uri is not None and not report_only:  # each run logs under the study's parent as it trains
        from .tracking.mlflow_live import live_runs_under
        from .tracking.mlflow_log import start_study

        live = live_runs_under(lambda: start_study(Path(study_cfg.out), uri), uri)
    if storage is not None:
        from .study.shared import run_shared_study

        comparison = run_shared_study(study_cfg, storage, study_name, heartbeat, live)
        if comparison is None:
            print(f"every run of {study_cfg.out} is done; another worker wrote the report", file=sys.stderr)
            return
    else:
        comparison = run_study(study_cfg, live)
    if uri is not None:
        from .tracking.mlflow_log import log_study

        parent = log_study(Path(study_cfg.out), uri, study_cfg.to_dict(), comparison)
        print(f"MLflow parent run {parent} at {uri}", file=sys.stderr)
    print((Path(study_cfg.out) / "comparison.md").read_text())
    print(f"report: {Path(study_cfg.out) / 'report.html'}  ({comparison['study_seconds']:.0f} s)")


def default_study_values(data: str = "auto") -> dict:
    """The README's main job (about ten minutes on a 2-core CPU); on the user's own data, without its budget, which
    is sized for Fashion-MNIST: each model trains its recipe unless --budget says otherwise."""
    from .study.defaults import AUTO_DATA_ONLY, DEFAULT_STUDY

    values = dict(DEFAULT_STUDY)
    return values if data == "auto" else {k: v for k, v in values.items() if k not in AUTO_DATA_ONLY}


@app.command(epilog=_example("Examples: cnnarena tune digits --model simple-2conv --trials 20",
                             "  on many machines: cnnarena tune DATA --model fast --trials 100 --storage "
                             "postgresql://user:pw@db/optuna --study-name fast-sweep (the same on every worker)"))
def tune(
    data: str = typer.Argument(..., help="dataset (as for train)"),
    model: str = typer.Option(..., "--model", "-m", help="the model to tune"),
    trials: int = typer.Option(20, min=1, help="finished (complete or pruned) trials wanted, over all workers"),
    space: Path | None = typer.Option(None, help="YAML/JSON search space: option: {low, high, log} | {choices: "
                                      "[...]} | a fixed value [lr, weight decay, batch size, augmentation, label "
                                      "smoothing, epochs; backbones also unfreeze and finetune_lr_scale]"),
    storage: str | None = typer.Option(None, help="Optuna storage URL shared by the workers, e.g. postgresql://"
                                       "... [sqlite:///OUT/optuna.db]"),
    study_name: str | None = typer.Option(None, help="Optuna study name [DATA-MODEL]"),
    pruner: str = typer.Option("median", help="median | halving | none: stop trials that trail, epoch by epoch"),
    seed: int = typer.Option(0, help="the sampler's seed"),
    heartbeat: float = typer.Option(10.0, min=1, help="seconds between a worker's heartbeats; a trial silent for 3 "
                                    "of them (its worker died) is retried by another worker"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | mps"),
    mlflow: str | None = typer.Option(None, "--mlflow", help="also log to MLflow, one parent run with a child per "
                                      "trial (pruned ones end as KILLED): a tracking URI, or 'local' for "
                                      "sqlite:///mlflow.db here"),
    out: Path = typer.Option(Path("tune"), "--out", "-o", help="trial run directories, tune.json and "
                             "tune_report.html"),
) -> None:
    """Hyper-parameter search with Optuna (TPE, pruning on validation accuracy); each trial is a normal run under
    OUT/trials/. Workers started with the same --storage and --study-name share the search."""
    import optuna

    from .study.tune import TuneConfig, run_tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # cnnarena says what each trial does
    uri = _mlflow_uri(mlflow)
    _check_out_dir(out)
    tc = TuneConfig(data=data, model=model, trials=trials, out=out, storage=storage, study_name=study_name,
                    space=space, pruner=pruner, seed=seed, heartbeat=heartbeat,
                    common={"device": device} if device else None)
    live = None
    if uri is not None:  # each trial logs under the search's parent as it trains
        from .tracking.mlflow_live import live_runs_under
        from .tracking.mlflow_log import start_tune

        live = live_runs_under(lambda: start_tune(out, uri, tc.name()), uri)
    summary = run_tune(tc, live)
    print(f"best trial {summary['best_trial']}: validation accuracy {summary['best_value']:.4f}, test accuracy "
          f"{summary['best_test_accuracy']:.4f}; {', '.join(f'{k}={v}' for k, v in summary['best_params'].items())}"
          f"\nrun directory: {summary['best_run_dir']}\nreport: {summary['report']}")
    if uri is not None:  # after the summary: a tracking server that fails now loses none of it
        from .tracking.mlflow_log import log_tune, without_password

        # the trial target is left out: a later batch raises it, and MLflow's parameters cannot change
        settings = {"data": data, "model": model, "space": str(space) if space else "default",
                    "storage": without_password(storage) or "sqlite (OUT/optuna.db)", "pruner": pruner, "seed": seed}
        parent = log_tune(out, uri, settings, summary)
        print(f"MLflow parent run {parent} at {uri}", file=sys.stderr)


@app.command("lr-find", epilog=_example("Example: cnnarena lr-find fashion-mnist --model simple-2conv "
                                        "--optimizer adam"))
def lr_find_command(
    data: str = typer.Argument(..., help=DATA_HELP),
    model: str = typer.Option("simple-2conv", "--model", "-m", help="model to probe"),
    optimizer: str = typer.Option("adam", help="adam | adamw | sgd"),
    batch_size: int = typer.Option(128, "--batch-size", "-b"),
    steps: int = typer.Option(100, help="batches to probe (at least 5)"),
    start_lr: float = typer.Option(1e-7, help="the LR of the first batch"),
    end_lr: float = typer.Option(10.0, help="the LR of the last batch (above --start-lr)"),
    input_size: int | None = typer.Option(None, help="pretrained backbones: resolution they run at"),
    data_dir: Path | None = typer.Option(None, help="where datasets live"),
    out: Path = typer.Option(Path("lr_find.png"), "--out", "-o", help="where the plot goes (.png added to a name "
                             "without a suffix)"),
) -> None:
    """Learning-rate range test: the loss as the LR rises exponentially, with a suggested value."""
    from .config import build_config
    from .data.loader import BatchLoader
    from .report.lr_plot import plot_lr_find, plot_path
    from .run import build_model, prepare
    from .train.loop import resolve_device
    from .train.lr_finder import check_range, lr_find

    check_range(start_lr, end_lr, steps)
    out = plot_path(out)
    _check_parents(out, "--out")
    cfg = build_config(None, {"data": data, "model": model, "optimizer": optimizer, "batch_size": batch_size,
                              "input_size": input_size, "data_dir": str(data_dir) if data_dir else None})
    prep = prepare(cfg)  # the split, fraction and recipe fitted to the data that `train` would use
    for message in prep.messages:
        print(message, file=sys.stderr)
    t = prep.cfg.train
    net = build_model(prep.cfg, prep.split)
    loader = BatchLoader(prep.train, t.batch_size, device=resolve_device(t.device), shuffle=True, seed=t.seed)
    result = lr_find(net, loader, t, start_lr=start_lr, end_lr=end_lr, steps=steps)
    out = plot_lr_find(result, out)
    print(f"suggested learning rate: {result.suggestion:.2e} (steepest descent); loss was lowest at "
          f"{result.min_loss_lr:.2e}\nplot: {out}")


@app.command(epilog=_example("Examples: cnnarena models | cnnarena models resnet | "
                             "cnnarena models 'efficientnet*' --all"))
def models(
    pattern: str | None = typer.Argument(None, help="search timm's model names (shell-style; a word matches "
                                         "anywhere)"),
    all_models: bool = typer.Option(False, "--all", help="every timm model (with PATTERN: those that match)"),
) -> None:
    """The custom CNN presets, then pretrained backbones: alias, timm name, parameters, input size, weights."""
    from .models.custom import format_preset_table
    from .models.pretrained import format_model_table, search_models

    if pattern is None:
        print(format_preset_table() + "\n")
    rows = search_models(pattern, everything=all_models)
    if not rows:
        raise UserError(f"no timm model matches {pattern!r}: try a shorter pattern, or `cnnarena models --all`")
    print(format_model_table(rows))
    if any(row["params"] is None for row in rows):
        print(f"({len(rows)} models: parameters are counted for at most 60 rows; narrow the pattern to see them)")


# What Ctrl-C prints, for the commands that resume where they stopped when run again; the others exit quietly.
RESUME_HINTS = {
    "train": "interrupted: the run directory keeps the last finished epoch; rerun the same command to resume",
    "study": "interrupted: the study directory keeps every finished run; rerun the same command to resume",
}


def main() -> None:
    """The `cnnarena` command: the one place that opts into process-wide settings (runtime.py)."""
    import os

    from . import runtime

    runtime.configure(
        tune_malloc=True,  # before any tensor exists, so the heap serves every large block (see memory.py)
        tune_threads=os.environ.get("CNNARENA_THREAD_TUNING", "1") != "0",
        live_progress=sys.stderr.isatty(), console=True)
    sys.exit(run(sys.argv[1:]))


def run(args: list[str]) -> int:
    """Parse and run one command line; the exit code. Every mistake is one `error: ...` line and code 2.

    Click is run outside its standalone mode, so that its usage errors (unknown option or command, missing
    argument, bad value) reach this function instead of being drawn as multi-line boxes, and Ctrl-C is not
    turned into a silent exit 130 before the resume hint can be printed.
    """
    command = typer.main.get_command(app)
    ctx = None
    try:
        with command.make_context("cnnarena", list(args) or ["--help"]) as ctx:
            command.invoke(ctx)
    except typer.Exit as e:  # --help, --version
        return e.exit_code
    except UserError as e:
        return _error(str(e))
    except typer.TyperException as e:  # click's UsageError, BadParameter, NoSuchOption, MissingParameter...
        return _error(_usage_message(e))
    except KeyboardInterrupt:
        hint = RESUME_HINTS.get(getattr(ctx, "invoked_subcommand", None) or "")
        if hint:  # on a terminal the live progress bar has no newline yet
            print(("\n" if sys.stderr.isatty() else "") + hint, file=sys.stderr)
        return 130
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `cnnarena models --all | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        message = str(e)
        if not (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
                or "can't allocate memory" in message or "out of memory" in message.lower()):
            raise
        first = message.strip().splitlines()[0][:160] if message.strip() else type(e).__name__
        return _error(f"out of memory ({first}): lower --max-memory, --batch-size or --input-size; checkpoints "
                      "written so far are intact and rerunning resumes")
    except OSError as e:  # a full disk, a read-only mount, no permission: the user's to fix, not a traceback
        if e.errno not in WRITE_ERRNOS:
            raise
        where = f" {e.filename}" if e.filename else ""
        verb = "access" if e.errno in (errno.EACCES, errno.EPERM) else "write"
        return _error(f"cannot {verb}{where}: {e.strerror}; what was already written is intact, and rerunning "
                      "the same command resumes once it can be written")
    return 0


WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def _error(message: str) -> int:
    print("error: " + " ".join(message.split("\n")), file=sys.stderr)
    return 2


def _usage_message(e: typer.TyperException) -> str:
    """"No such option: --bogus" -> "no such option: --bogus (see `cnnarena train --help`)"."""
    message = e.format_message().strip().rstrip(".")
    if type(e).__name__ == "NoSuchOption":  # (typer's own click) its "Possible options" share a letter or two
        close = difflib.get_close_matches(e.option_name, e.possibilities or [], n=1, cutoff=0.75)
        message = f"No such option: {e.option_name}" + (f" (did you mean {close[0]}?)" if close else "")
    if message[:2].istitle():  # "No such ...", "Missing ...", "Invalid ...": lower-case like our other errors
        message = message[0].lower() + message[1:]
    ctx = getattr(e, "ctx", None)
    return f"{message} (see `{ctx.command_path} --help`)" if ctx is not None else message


if __name__ == "__main__":
    main()
