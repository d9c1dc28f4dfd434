"""The resolved configuration of one run: data + model + training, from defaults < YAML file < CLI.

Saved as config.yaml in every run directory, so a run can be understood and repeated from it alone.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.augment_spec import parse_augment
from .errors import UserError
from .schema import RUN, defaults
from .train.config import TrainConfig

_DEFAULTS = defaults(RUN)  # every default is declared once, in schema.py


@dataclass
class RunConfig:
    data: str = "digits"
    data_dir: str | None = _DEFAULTS["data_dir"]
    image_size: int | None = _DEFAULTS["image_size"]  # folder/CSV images are resized to this once (default 64)
    grayscale: bool | None = _DEFAULTS["grayscale"]
    class_map: str | None = _DEFAULTS["class_map"]
    strict: bool = _DEFAULTS["strict"]
    curation: str | None = _DEFAULTS["curation"]  # a curation.yaml: images left out and relabelled
    # a Hugging Face dataset's image / label column (found from its features)
    image_column: str | None = _DEFAULTS["image_column"]
    label_column: str | None = _DEFAULTS["label_column"]
    split: str | None = _DEFAULTS["split"]  # reuse a split manifest so several runs see the same images
    val_frac: float = _DEFAULTS["val_frac"]
    test_frac: float = _DEFAULTS["test_frac"]  # ignored when the dataset has an official test split
    split_seed: int = _DEFAULTS["split_seed"]
    fraction: float = _DEFAULTS["fraction"]  # use this stratified share of the training set
    model: str = _DEFAULTS["model"]
    pretrained: bool = _DEFAULTS["pretrained"]
    weights: str | None = _DEFAULTS["weights"]
    input_size: int | None = _DEFAULTS["input_size"]  # resolution a pretrained network runs at (default: its own)
    head_hidden: list[int] = field(default_factory=lambda: list(_DEFAULTS["head_hidden"]))
    head_dropout: float = _DEFAULTS["head_dropout"]
    # fine-tuning: epochs with the backbone frozen (fastai's freeze_epochs)
    freeze_epochs: int = _DEFAULTS["freeze_epochs"]
    unfreeze: str = _DEFAULTS["unfreeze"]  # then unfreeze the last K stages ("2") or "all"
    finetune_lr_scale: float = _DEFAULTS["finetune_lr_scale"]  # phase-2 learning rate = lr × this
    layer_decay: float | None = _DEFAULTS["layer_decay"]  # phase 2: each earlier stage gets lr × decay^depth
    # no augmentation: cache what the frozen part computes (phase 1 and 2)
    feature_cache: bool = _DEFAULTS["feature_cache"]
    # phase 2: BatchNorm keeps its ImageNet statistics (frozen) or trains them
    finetune_bn: str = _DEFAULTS["finetune_bn"]
    # phase 2: linear LR warm-up epochs (None: as --warmup-epochs)
    finetune_warmup: float | None = _DEFAULTS["finetune_warmup"]
    out: str | None = _DEFAULTS["out"]
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        """Every mistake in the options, before any data is read or any epoch is trained."""
        from .train.options import check_device_name, parse_bn_mode, parse_unfreeze

        checks = [
            (0 < self.fraction <= 1, f"--fraction must be in (0, 1], got {self.fraction}"),
            (0 <= self.val_frac < 1 and 0 <= self.test_frac < 1 and self.val_frac + self.test_frac < 1,
             f"--val-frac and --test-frac must be in [0, 1) with a sum below 1 (got {self.val_frac}, "
             f"{self.test_frac})"),
            (self.freeze_epochs >= 0, f"--freeze-epochs must be >= 0 (got {self.freeze_epochs})"),
            (0 <= self.split_seed <= 2**32 - 1, f"--split-seed must be between 0 and {2**32 - 1} "
                                                f"(got {self.split_seed})"),
            (self.finetune_lr_scale > 0, f"--finetune-lr-scale must be positive (got {self.finetune_lr_scale})"),
            (self.layer_decay is None or 0 < self.layer_decay <= 1,
             f"--layer-decay must be in (0, 1] (got {self.layer_decay})"),
            (0 <= self.head_dropout < 1, f"--head-dropout must be in [0, 1) (got {self.head_dropout})"),
            (all(n >= 1 for n in self.head_hidden), f"--head-hidden sizes must be positive (got {self.head_hidden})"),
            (self.image_size is None or 8 <= self.image_size <= 4096,
             f"--image-size must be between 8 and 4096 pixels (got {self.image_size})"),
            (not self.curation or Path(self.curation).is_file(), f"--curation {self.curation}: no such file"),
            (self.input_size is None or 8 <= self.input_size <= 4096,
             f"--input-size must be between 8 and 4096 pixels (got {self.input_size})"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        parse_unfreeze(self.unfreeze)
        parse_bn_mode(self.finetune_bn)
        check_device_name(self.train.device)
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"]["augment"] = {k: v for k, v in d["train"]["augment"].items() if v}
        return d

    def save(self, path: Path) -> None:
        from .files import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


RUN_KEYS = {f.name for f in dataclasses.fields(RunConfig)} - {"train"}
TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


def build_config(file_values: dict[str, Any] | None = None, cli_values: dict[str, Any] | None = None, *,
                 use_recipe: bool = True) -> RunConfig:
    """Merge over the defaults: the model's recipe < a config file's values < CLI values (None = not given)."""
    from .models.recipes import recipe_for

    model = (cli_values or {}).get("model") or (file_values or {}).get("model") or RunConfig.model
    layers = [recipe_for(model) if use_recipe else {}, file_values or {}, cli_values or {}]
    merged: dict[str, Any] = {}
    for source in layers:
        for key, value in source.items():
            if key == "train" and isinstance(value, dict):  # nested form, as saved in config.yaml
                merged.update({k: v for k, v in value.items() if v is not None})
            elif value is not None:
                merged[key.replace("-", "_")] = value
    unknown = set(merged) - RUN_KEYS - TRAIN_KEYS
    if unknown:
        known = ", ".join(sorted(RUN_KEYS | TRAIN_KEYS))
        raise UserError(f"unknown config key {sorted(unknown)[0]!r}; known keys: {known}")
    train_values = {k: merged.pop(k) for k in list(merged) if k in TRAIN_KEYS}
    train_values["augment"] = parse_augment(train_values.get("augment"))
    try:
        train = TrainConfig(**train_values).validate()
        cfg = RunConfig(**merged, train=train)
    except TypeError as e:
        raise UserError(f"bad config: {e}") from None
    return cfg.validate()


def load_config_file(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    from .documents import read_document

    data = read_document(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of option: value")
    return check_types(data, f"config file {path}")


def read_saved(run_dir: str | Path) -> dict[str, Any]:
    """A run's config.yaml as saved ({} when it has none), every key of a known option checked against its type:
    one line naming the file and the key (another version's file, or one edited by hand)."""
    from . import rundir

    return check_types(rundir.read_config(Path(run_dir)), str(Path(run_dir) / rundir.CONFIG))


def load_saved(run_dir: str | Path) -> RunConfig:
    """The RunConfig a run trained with, rebuilt from its config.yaml (its values already hold the recipe's)."""
    from . import rundir

    saved = read_saved(run_dir)
    if not saved:
        raise UserError(f"{run_dir} is not a cnnarena run directory (no {rundir.CONFIG})")
    try:
        return build_config(saved, use_recipe=False)
    except UserError as e:
        raise UserError(f"{Path(run_dir) / rundir.CONFIG}: {e}") from None


def check_types(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Every run option's value has the type its field declares (a number may stand for a text option such as
    `unfreeze: 2`); the error names the key, the file and what was expected. Unknown keys are build_config's."""
    hints = _run_hints()
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name == "train" and isinstance(value, dict):  # nested form, as saved in config.yaml
            out[key] = check_types(value, where)
            continue
        hint = hints.get(name)
        if hint is not None:
            value = expect(value, hint, name, where)
        out[key] = value
    return out


def expect(value: Any, hint: Any, key: str, where: str) -> Any:
    """`value` if it fits the type `hint` (numbers given for text become text), else one UserError; a number must
    be finite and of a sensible size whatever the option."""
    from .option import number_problem

    if _fits(value, hint):
        problem = number_problem(value)
        if problem is not None:
            raise UserError(f"{where}: {key} {problem}")
        return value
    if _allows(hint, str) and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise UserError(f"{where}: {key} must be {_describe(hint)}, got {_kind(value)}")


def run_option_names() -> list[str]:
    """Every option a run's config takes (train options included, flat)."""
    return list(_run_hints())


@functools.cache
def _run_hints() -> dict[str, Any]:
    hints = {**typing.get_type_hints(RunConfig), **typing.get_type_hints(TrainConfig)}
    hints.pop("train")
    hints["augment"] = str | dict | None  # a preset or list in text, or a mapping (parse_augment checks it)
    return hints


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        args = typing.get_args(hint)
        return isinstance(value, list) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # Any and nested dataclasses: their own parsers check them


def _allows(hint: Any, kind: type) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_allows(h, kind) for h in typing.get_args(hint))
    return hint is kind


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    names = {type(None): "null", bool: "true or false", int: "a whole number", float: "a number", str: "text",
             dict: "a mapping"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) is list:
        args = typing.get_args(hint)
        return f"a list of {_describe(args[0]).removeprefix('a ')}s" if args else "a list"
    return str(hint)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value!r}"[:60]
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    return type(value).__name__

