"""Command line: parse, call the library, print. No logic of its own.

Every mistake a user can make ends as one `error: ...` line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Custom CNN from scratch vs ImageNet-pretrained fine-tuning: train, compare, deploy.")

DATA_HELP = "digits, fashion-mnist, cifar10, or a path: class-folder directory, CSV of path,label, cifar-10-batches-py"


def _csv_ints(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated whole numbers, got {value!r}") from None


@app.command(epilog="Example: cnnarena train fashion-mnist --model fast --epochs 12 --out runs/fast")
def train(
    data: str = typer.Argument(..., help=DATA_HELP),
    model: str | None = typer.Option(None, "--model", "-m", help="custom preset (simple-2conv, fast, ...), "
                                        "a layer-spec YAML/JSON, or a pretrained backbone (see `cnnarena models`)"),
    epochs: int | None = typer.Option(None, help="maximum epochs [10]"),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help="[128]"),
    lr: float | None = typer.Option(None, help="learning rate [1e-3]"),
    optimizer: str | None = typer.Option(None, help="adam | adamw | sgd [adam]"),
    momentum: float | None = typer.Option(None, help="SGD momentum [0.9]"),
    nesterov: bool | None = typer.Option(None, "--nesterov/--no-nesterov", help="SGD Nesterov momentum"),
    weight_decay: float | None = typer.Option(None, help="[0]"),
    schedule: str | None = typer.Option(None, help="constant | step | exponential | cosine | onecycle | linear"),
    warmup_epochs: float | None = typer.Option(None, help="linear warm-up epochs [0]"),
    label_smoothing: float | None = typer.Option(None, help="[0]"),
    grad_clip: float | None = typer.Option(None, help="clip the global gradient norm to this"),
    early_stopping: int | None = typer.Option(None, help="patience in epochs; restores the best epoch"),
    reduce_on_plateau: int | None = typer.Option(None, help="patience in epochs before halving the LR"),
    monitor: str | None = typer.Option(None, help="val_loss | val_accuracy: what 'best epoch' means"),
    augment: str | None = typer.Option(None, help="none | flip | light | standard | strong, "
                                          "or a list like 'flip,translate=2,rotation=10'"),
    tta: bool | None = typer.Option(None, "--tta/--no-tta", help="flip test-time augmentation"),
    seed: int | None = typer.Option(None, help="training seed [0]"),
    deterministic: bool | None = typer.Option(None, "--deterministic/--no-deterministic"),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="bf16 autocast (default: on CUDA only)"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | mps [auto]"),
    max_minutes: float | None = typer.Option(None, help="time budget: stop after the epoch that crosses it"),
    pretrained: bool | None = typer.Option(None, "--pretrained/--no-pretrained",
                                              help="ImageNet weights for backbones (default on; never silently off)"),
    weights: Path | None = typer.Option(None, help="backbone weights file (safetensors or state dict)"),
    input_size: int | None = typer.Option(None, help="resolution a pretrained backbone runs at, e.g. 96"),
    head_hidden: str | None = typer.Option(None, help="hidden dense layers of a backbone's head, e.g. 256,128"),
    head_dropout: float | None = typer.Option(None, help="dropout in the head"),
    freeze_epochs: int | None = typer.Option(None, help="fine-tuning: epochs with the backbone frozen first"),
    unfreeze: str | None = typer.Option(None, help="then unfreeze the last K stages, or 'all'"),
    finetune_lr_scale: float | None = typer.Option(None, help="phase-2 LR = lr × this [0.1]"),
    layer_decay: float | None = typer.Option(None, help="phase 2: layer-wise LR decay per stage"),
    data_dir: Path | None = typer.Option(None, help="where datasets live (else $CNNARENA_DATA, system, cache)"),
    image_size: int | None = typer.Option(None, help="folder/CSV images are resized to this once [64]"),
    grayscale: bool | None = typer.Option(None, "--grayscale/--rgb", help="force channel mode for folders"),
    class_map: Path | None = typer.Option(None, help="YAML/JSON mapping folder names to class names"),
    strict: bool | None = typer.Option(None, "--strict/--lenient", help="unreadable images are an error"),
    split: Path | None = typer.Option(None, help="reuse this split manifest (split.json of another run)"),
    val_frac: float | None = typer.Option(None, help="validation share [0.2]"),
    test_frac: float | None = typer.Option(None, help="test share when there is no official test set [0.2]"),
    split_seed: int | None = typer.Option(None, help="[0]"),
    fraction: float | None = typer.Option(None, help="train on this stratified share of the training set"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run directory [runs/DATA-MODEL-TIME]; "
                                       "an unfinished one is resumed"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of any of these options"),
) -> None:
    """Train one model and evaluate it on the test split; everything lands in the run directory."""
    values = {k: v for k, v in locals().items() if k != "config"}
    from .config import build_config, load_config_file
    from .evaluate.metrics import format_per_class
    from .run import default_run_dir, train_run

    values["head_hidden"] = _csv_ints(head_hidden)
    for key in ("weights", "data_dir", "class_map", "split", "out"):
        values[key] = str(values[key]) if values[key] is not None else None
    cfg = build_config(load_config_file(config), values)
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    metrics = train_run(cfg, run_dir)
    print(format_per_class(metrics))
    print(f"\ntest accuracy {metrics['test_accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
          f"test loss {metrics['test_loss']:.4f}  ({metrics['epochs_run']} epochs, {metrics['train_seconds']:.1f}s "
          f"training)\nrun directory: {run_dir}")


@app.command(epilog="Example: cnnarena evaluate runs/fast --tta")
def evaluate(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    data: str | None = typer.Option(None, help="evaluate on this dataset's test split instead"),
    tta: bool = typer.Option(False, "--tta/--no-tta", help="flip test-time augmentation"),
) -> None:
    """Re-evaluate a saved run's model on its test split (or on another dataset with the same classes)."""
    from .evaluate.metrics import format_per_class
    from .evaluate.reevaluate import reevaluate

    metrics = reevaluate(run_dir, data=data, tta=tta)
    print(format_per_class(metrics))
    print(f"\ntest accuracy {metrics['test_accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
          f"test loss {metrics['test_loss']:.4f}")


@app.command(epilog="Example: cnnarena inspect ./RealWaste --out inspect-realwaste")
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

    source = load_source(data, data_dir=data_dir, image_size=image_size, class_map=class_map, strict=strict)
    desc = describe(source)
    paths = write_plots(source, out)
    print(json.dumps(desc, indent=1) if as_json else format_description(desc))
    print("\n".join(f"wrote {p}" for p in paths))


@app.command(epilog="Example: cnnarena summary simple-2conv --input 1x28x28 --classes 10")
def summary(
    model: str = typer.Argument(..., help="custom preset, layer-spec file or pretrained backbone"),
    input: str = typer.Option("3x32x32", "--input", help="C×H×W of the data, e.g. 1x28x28"),
    classes: int = typer.Option(10, help="number of classes"),
    depth: int = typer.Option(1, help="how many module levels to expand (pretrained nets are deep)"),
    input_size: int | None = typer.Option(None, help="pretrained backbones: resolution they run at"),
) -> None:
    """A Keras-style table: layer, output shape, parameters, with trainable / non-trainable totals."""
    from .models.registry import create_model
    from .models.summary import summarize

    try:
        c, h, w = (int(v) for v in input.lower().replace("×", "x").split("x"))
    except ValueError:
        raise UserError(f"--input must look like 3x32x32, got {input!r}") from None
    names = [str(i) for i in range(classes)]
    net = create_model(model, num_classes=classes, in_chans=c, data_size=(h, w), classes=names,
                       pretrained=False, input_size=input_size)
    print(summarize(net, (c, h, w), depth=depth))


def main() -> None:
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the run directory keeps the last finished epoch; rerun the same command to resume",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
