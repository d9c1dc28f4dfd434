"""Every option, declared once: its name, type, default, help, and (for a run's options) the recipes' defaults.

The CLI generates its options from these tables, the config dataclasses take their defaults from them, and the
Python API checks its keyword arguments against them. Torch-free, so that `--help` and a typo cost no import.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .option import DATA, DATA_HELP, MISSING, SEED_RANGE, Option, _opts, number_problem  # noqa: F401 - re-exported

AUGMENT_HELP = ("none | flip | light | standard | strong, or a list like 'flip,translate=2,rotation=10' "
                "(also zoom, shear, brightness, contrast, saturation, erase=PROBABILITY)")

# A run's data and model options (RunConfig) and its training options (TrainConfig), in --help's order.
RUN = _opts(
    Option("model", str, "simple-2conv", "custom preset (simple-2conv, fast, ...), a layer-spec YAML/JSON, or a "
           "pretrained backbone (see `cnnarena models`)", short="-m", shown=""),
    Option("epochs", int, 10, "maximum epochs"),
    Option("batch_size", int, 128, short="-b"),
    Option("lr", float, 1e-3, "learning rate"),
    Option("optimizer", str, "adam", "adam | adamw | sgd"),
    Option("momentum", float, 0.9, "SGD momentum"),
    Option("nesterov", bool, False, "SGD Nesterov momentum"),
    Option("weight_decay", float, 0.0),
    Option("schedule", str, "constant", "constant | step | exponential | cosine | onecycle | linear"),
    Option("warmup_epochs", float, 0.0, "linear warm-up epochs"),
    Option("step_size", int, 5, "'step' schedule: epochs between decays", hidden=True),
    Option("gamma", float, 0.5, "'step' / 'exponential' decay factor", hidden=True),
    Option("label_smoothing", float, 0.0),
    Option("class_weights", str, "none", "class weights in the loss: auto (inverse frequency) | none | a YAML/JSON "
           "file of class: weight"),
    Option("sampler", str, "shuffle", "shuffle | balanced (every class equally likely in each batch)"),
    Option("grad_clip", float, None, "clip the global gradient norm to this", shown=""),
    Option("early_stopping", int, None, "patience in epochs; restores the best epoch", shown=""),
    Option("reduce_on_plateau", int, None, "patience in epochs before halving the LR", shown=""),
    Option("monitor", str, "val_loss", "val_loss | val_accuracy: what 'best epoch' means"),
    Option("augment", str, "none", AUGMENT_HELP),
    Option("tta", bool, False, "flip test-time augmentation"),
    Option("tta_shift", int, 0, "with --tta, also average the image moved this many pixels left, right, up and down "
           "(each mirrored too: 10 views, not 2); pays for a model trained with --augment translate", low=0, high=8),
    Option("seed", int, 0, "training seed", low=SEED_RANGE[0], high=SEED_RANGE[1]),
    Option("deterministic", bool, False, "deterministic algorithms (bit-identical reruns, slower)"),
    Option("sync_bn", bool, False, "under torchrun on GPUs: BatchNorm statistics over the whole batch (SyncBatchNorm)"),
    Option("amp", bool, None, "bf16 autocast",
           shown="on CUDA; for custom CNNs also on CPUs with bf16 instructions (AVX512-BF16, AMX)"),
    Option("channels_last", bool, True, hidden=True),
    Option("compile", bool, False, "torch.compile the training step"),
    Option("tensorboard", bool, True, "TensorBoard event files in the run directory (tensorboard --logdir runs)"),
    Option("device", str, "auto", "auto | cpu | cuda | mps"),
    Option("max_minutes", float, None, "time limit: stop after the epoch that crosses it", shown=""),
    Option("budget", str, None, "wall-clock budget of the training, e.g. 20m, 90s, 1.5h: epochs are planned to fit "
           "(schedules end on time) and training stops on time with its best weights", shown=""),
    Option("max_memory", str, "auto", "peak memory: auto (on a CPU a share of the free memory, at most 4GB) | none | "
           "a size like 3GB; a larger batch runs as micro-batches (gradient accumulation)"),
    Option("micro_batch", int, None, hidden=True),
    Option("eval_batch_size", int, 1024, hidden=True),
    Option("pretrained", bool, True, "ImageNet weights for backbones (never silently off)"),
    Option("weights", Path, None, "backbone weights file (safetensors or state dict)", shown=""),
    Option("input_size", int, None, "resolution a pretrained backbone runs at, e.g. 96",
           shown="chosen for the images"),
    Option("head_hidden", "ints", [], "hidden dense layers of a backbone's head, e.g. 256,128", shown="none"),
    Option("head_dropout", float, 0.0, "dropout in the head"),
    Option("freeze_epochs", int, 0, "fine-tuning: epochs with the backbone frozen first"),
    Option("unfreeze", str, "all", "then unfreeze the last K stages, or 'all'"),
    Option("finetune_lr_scale", float, 0.1, "phase-2 LR = lr × this"),
    Option("layer_decay", float, None, "phase 2: layer-wise LR decay per stage", shown=""),
    Option("finetune_bn", str, "frozen", "BatchNorm when fine-tuning (phase 2, or the whole run with "
           "--freeze-epochs 0): frozen (keeps ImageNet statistics, Keras' advice) | train"),
    Option("finetune_warmup", float, None, "phase 2: linear LR warm-up epochs", shown="as --warmup-epochs"),
    Option("feature_cache", bool, True, "no augmentation: compute the frozen part's output once"),
    Option("data_dir", Path, None, "where datasets live (else $CNNARENA_DATA, system, cache)", shown=""),
    Option("image_size", int, None, "folder/CSV images are resized to this once", shown="64"),
    Option("grayscale", bool, None, "force channel mode for folders", cli="--grayscale/--rgb", shown="as the images"),
    Option("class_map", Path, None, "YAML/JSON mapping folder names to class names", shown=""),
    Option("strict", bool, False, "unreadable images are an error", cli="--strict/--lenient"),
    Option("curation", Path, None, "leave out and relabel images as this file says (the curation.yaml of `cnnarena "
           "doctor --review`); the image files are never changed", shown=""),
    Option("image_column", str, None, "a Hugging Face dataset's image column", shown="its Image feature"),
    Option("label_column", str, None, "a Hugging Face dataset's label column", shown="its ClassLabel"),
    Option("split", Path, None, "reuse this split manifest (split.json of another run)", shown=""),
    Option("val_frac", float, 0.2, "validation share"),
    Option("test_frac", float, 0.2, "test share when there is no official test set"),
    Option("split_seed", int, 0, low=SEED_RANGE[0], high=SEED_RANGE[1]),
    Option("fraction", float, 1.0, "train on this stratified share of the training set"),
    Option("out", Path, None, "run directory; an unfinished one is resumed", short="-o",
           shown="runs/DATA-MODEL-TIME"),
)

# Which RUN options belong to the training config (TrainConfig); the rest are RunConfig's own.
TRAIN_FIELDS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "nesterov", "weight_decay", "schedule",
                "warmup_epochs", "step_size", "gamma", "label_smoothing", "grad_clip", "early_stopping",
                "reduce_on_plateau", "monitor", "augment", "tta", "tta_shift", "seed", "deterministic", "sync_bn",
                "amp", "channels_last", "compile", "device", "max_minutes", "budget", "max_memory", "micro_batch",
                "eval_batch_size", "tensorboard", "class_weights", "sampler")
RUN_ONLY = _opts(  # the train command's options that are not kept in config.yaml
    Option("mlflow", str, None, "also log the run to MLflow, each epoch as it ends: a tracking URI, or 'local' for "
           "sqlite:///mlflow.db here (artefacts in ./mlruns)", config=False, shown=""),
    Option("config", Path, None, "YAML file of any of these options", short="-c", config=False, shown=""),
)

STUDY = _opts(
    Option("models", "names", ["simple-2conv", "fast", "efficientnet_lite0"], "comma-separated models"),
    Option("seeds", int, 1, "train every model with this many seeds"),
    Option("fractions", "floats", [1.0], "training-set fractions for learning curves, e.g. 0.1,0.5,1"),
    Option("lrs", "floats", [], "learning-rate comparison"),
    Option("input_sizes", "ints", [], "also run each pretrained model at these resolutions under the same budget, "
           "e.g. 96,160,224 (a chart of accuracy against cost)", shown=""),
    Option("lr_models", "names", None, "models that get the LR comparison", shown="the first"),
    Option("lr_epochs", int, 2, "epochs per LR-comparison run"),
    Option("lr_fraction", float, 1.0, "share of the training set for the LR comparison"),
    Option("measure_seconds", float, 1.5, "seconds per latency/throughput measurement"),
    Option("budget", str, None, "wall-clock budget of the study's training on the whole training set, e.g. 20m, "
           "shared equally by the models (and seeds)", shown=""),
    Option("budget_per_model", str, None, "or this budget for each model's run, e.g. 5m"),
    Option("compare_curation", bool, False, "with --curation: also train every model on the data as given (in "
           "OUT/as-given, on the same split) and report what the curation changed, both tested on the curated test "
           "images"),
    Option("out", Path, None, "study directory; rerun to resume", short="-o",
           shown="default study: studies/default; with your DATA: studies/DATA-NAME"),
)
STUDY_RUN_OPTIONS = ("epochs", "max_minutes", "max_memory", "tensorboard", "device", "data_dir", "image_size",
                     "curation")
STUDY_ONLY = _opts(
    Option("mlflow", str, None, "also log to MLflow, one parent run with a child per run: a tracking URI, or "
           "'local' for sqlite:///mlflow.db here", config=False, shown=""),
    Option("storage", str, None, "share the runs with other workers through this Optuna storage (e.g. "
           "postgresql://...; every worker runs the same command)", config=False, shown=""),
    Option("study_name", str, None, "with --storage: the Optuna study", config=False, shown="cnnarena-study-OUT"),
    Option("heartbeat", float, 10.0, "with --storage: seconds between a worker's heartbeats; a run silent for 3 of "
           "them is retried by another worker", config=False, low=1),
    Option("report_only", "flag", False, "write the comparison and report from the finished runs; train nothing",
           config=False),
    Option("config", Path, None, "study YAML: data, models (with per-model options), seeds, fractions, lrs, and run "
           "options for all models", short="-c", config=False, shown=""),
)


# Recipes: what a model family trains with unless the user says otherwise (the "recipe default" of an option).
# A preset is an architecture plus how to train it; the reports' architectures keep the reports' settings (Adam 1e-3),
# `fast` keeps the recipe it was tuned with, backbones fine-tune in two phases.

REPORT_STYLE = {"optimizer": "adam", "lr": 1e-3}

FAST = {
    "optimizer": "sgd", "nesterov": True, "momentum": 0.9, "lr": 0.2, "weight_decay": 5e-4, "batch_size": 256,
    "schedule": "onecycle", "label_smoothing": 0.1, "augment": "flip", "tta": True, "epochs": 10,
}

# The same recipe, for 30 epochs (what bf16 training fits in ~8.5 minutes of a 2-core Zen 4; ~13 in float32), with
# 2-px shifts added to the flips, and 1-px shifts added to the flip TTA (chosen on the validation split of 4
# trained models: +0.08 to +0.33 points). The measurements: benchmarks/results/custom_presets.md.
FAST_LARGE = {**FAST, "augment": "light", "epochs": 30, "tta_shift": 1}

TUNED = {"fast": FAST, "fast-large": FAST_LARGE}  # presets with a recipe of their own

# Phase 2 at 0.3x the LR, decayed along a cosine, with label smoothing: the best of the schedules, rates and batches
# compared in benchmarks/lite0_recipe.py (a constant 0.1x learnt less in the same epochs; 1.0x diverged); 4 epochs
# of it, as validation accuracy still rose through a third (benchmarks/results/lite0_time_breakdown.json)
PRETRAINED = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "freeze_epochs": 2, "epochs": 4,
              "schedule": "cosine", "finetune_lr_scale": 0.3, "label_smoothing": 0.1}


# The custom presets' names (their layers are in models/custom.py, which checks that the two lists agree).
CUSTOM_PRESETS = ("simple-2conv", "simple-3conv-5x5", "simple-3conv-dense512", "fast", "fast-large")


def recipe_for(model: str) -> dict[str, Any]:
    """The options `model` trains with unless told otherwise: a tuned preset's recipe, the reports' Adam 1e-3 for
    the other custom CNNs, two-phase fine-tuning for a pretrained backbone."""
    if model in TUNED:
        return dict(TUNED[model])
    if model in CUSTOM_PRESETS or model.endswith((".yaml", ".yml", ".json")):
        return dict(REPORT_STYLE)
    return dict(PRETRAINED)


def recipe_overrides() -> dict[str, dict[str, Any]]:
    """Each family's recipe as recipe_for gives it, by a name for --help; the first is the default model's
    (simple-2conv: the custom presets and layer-spec files), then each preset with a recipe of its own, then
    the pretrained backbones (every other model name)."""
    return {"presets": dict(REPORT_STYLE), **{name: dict(recipe) for name, recipe in TUNED.items()},
            "backbones": dict(PRETRAINED)}


# The default study behind the README's main command: the reports' question, answered in about ten minutes. The
# report-style CNN and `fast` from scratch, EfficientNet-Lite0 fine-tuned from ImageNet weights (its last stage
# unfrozen), each with the same wall-clock budget on the whole training set, plus learning curves on 1% and 10% of it.
# Sized for a 2-core laptop CPU on Fashion-MNIST (seconds on digits).
DEFAULT_STUDY = {
    "data": "auto",
    "models": [
        {"simple-2conv": {"batch_size": 128}},
        "fast",
        {"efficientnet_lite0": {"unfreeze": "1"}},
    ],
    "fractions": [0.01, 0.1, 1.0],
    "budget_per_model": "150s",
    "lrs": [1e-4, 1e-3, 1e-2, 1e-1],
    "lr_epochs": 2,
    "lr_fraction": 0.1,
    "out": "studies/default",
}

# Sized for the built-in dataset: a study of the user's own data without --config compares the models on the whole
# training set, each with its recipe (or --budget); --fractions and --lrs add learning curves and the LR comparison
AUTO_DATA_ONLY = ("budget_per_model", "fractions", "lrs", "lr_epochs", "lr_fraction", "out")


def defaults(table: dict[str, Option], names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """{name: default} of a table's config options (lists copied, so a caller may change them)."""
    return {o.name: (list(o.default) if isinstance(o.default, list) else o.default) for o in table.values()
            if o.config and (names is None or o.name in names)}


def command_options(command: str) -> dict[str, Option]:
    """The options of a command other than train and study (schema_commands.py), e.g. "lr-find"."""
    from . import schema_commands

    return getattr(schema_commands, command.upper().replace("-", "_"))


def check_names(given: dict[str, Any], known: dict[str, Any], what: str) -> None:
    """A TypeError naming the close match for an option that does not exist (as Python does for a bad keyword)."""
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{what}() got an unexpected keyword argument {name!r}{hint}")


def parse_list(value: str | list | None, kind: str, flag: str) -> list | None:
    """A comma list from the command line ('256,128') as numbers or names; a list is returned as it is."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return list(value)
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if kind == "names":
        return items
    number = int if kind == "ints" else float
    try:
        return [number(v) for v in items]
    except ValueError:
        what = "whole numbers" if kind == "ints" else "numbers"
        raise UserError(f"{flag} expects comma-separated {what}, got {value!r}") from None


@dataclass
class _Shown:
    """How --help writes a default: 1e-3, 0.2, on/off, a list joined by commas."""

    exp: bool = False
    memo: dict = field(default_factory=dict)

    def __call__(self, value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, list):  # study models are names or {name: options}; LRs alike: 1e-4,...,1e-1
            exp = any("e" in _Shown()(v) for v in value if isinstance(v, float))
            return ",".join(next(iter(v)) if isinstance(v, dict) else _Shown(exp)(v) for v in value) or "none"
        if isinstance(value, float):
            mantissa, exponent = f"{value:e}".split("e")
            short = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
            return short if self.exp or len(short) < len(f"{value:g}") else f"{value:g}"
        return str(value)


def run_help(option: Option) -> str:
    """`help [default; fast, fast-large: ...; backbones: ...]`: the default under the default model's recipe, then
    each model family whose recipe gives another value (models/recipes.py)."""
    if option.shown is not None:
        return f"{option.help} [{option.shown}]".strip() if option.shown else option.help
    groups = recipe_overrides()
    first = groups.pop(next(iter(groups)))
    base = {**defaults(RUN), **first}

    def value(recipe: dict) -> str:
        values = {**base, **recipe}
        if option.name == "epochs" and values.get("freeze_epochs"):
            return f"{values['freeze_epochs']} frozen + {values['epochs']}"
        return _Shown()(values[option.name])

    default = value({})
    others: dict[str, list[str]] = {}
    for name, recipe in groups.items():
        if value(recipe) != default:
            others.setdefault(value(recipe), []).append(name)
    parts = [default] + [f"{', '.join(names)}: {v}" for v, names in others.items()]
    return f"{option.help} [{'; '.join(parts)}]".strip()


def study_help(option: Option) -> str:
    """`help [default study: ...; with your DATA or --config: ...]`: the default study's value (study/defaults.py),
    then the study config's where another study gets another."""
    if option.name == "epochs":  # each model's own, in the default study
        runs = [f"{next(iter(m))} {m[next(iter(m))]['epochs']}" for m in DEFAULT_STUDY["models"]
                if isinstance(m, dict) and "epochs" in m[next(iter(m))]]
        return f"{option.help} [default study: {', '.join(runs)}]" if runs else option.help
    if option.shown is not None:
        return f"{option.help} [{option.shown}]".strip() if option.shown else option.help
    if not option.config:  # a command's own option: its default as it is
        return option.help if option.default in (None, False) else f"{option.help} [{_Shown()(option.default)}]"
    configured = option.default
    default = DEFAULT_STUDY.get(option.name, configured)
    if default is MISSING or default is None:
        return option.help
    shown = _Shown()
    parts = [shown(default)]
    if configured is not MISSING and shown(configured) != parts[0]:
        other = "with your DATA or --config" if option.name in AUTO_DATA_ONLY else "with --config"
        parts = [f"default study: {parts[0]}", f"{other}: {shown(configured)}"]
    return f"{option.help} [{'; '.join(parts)}]".strip()


def study_run_option(name: str) -> Option:
    """A run option a study passes to every model, with the study's wording."""
    base = RUN[name]
    texts = {"epochs": ("override every model's epochs", None),
             "max_minutes": ("time limit per run: stop after the epoch that crosses it", ""),
             "max_memory": ("peak memory of each run: auto | none | e.g. 3GB", "auto"),
             "tensorboard": ("TensorBoard event files in every run directory (tensorboard --logdir OUT)", "on"),
             "device": ("auto | cpu | cuda", "auto")}
    text, shown = texts.get(name, (base.help, base.shown))
    return Option(name, base.kind, base.default, text, cli=base.cli, shown=shown)
