"""What a study is: one dataset and split, several models (each with optional overrides), seeds,
training-set fractions and a learning-rate comparison."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..rundir import AT, base_model
from ..schema import STUDY, defaults

_DEFAULTS = defaults(STUDY)  # every default is declared once, in schema.py



@dataclass
class StudyConfig:
    data: str = "auto"  # "auto": Fashion-MNIST when present, digits otherwise
    models: list[str] = field(default_factory=lambda: list(_DEFAULTS["models"]))
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-model run options
    common: dict[str, Any] = field(default_factory=dict)  # run options for every model (epochs, data_dir...)
    seeds: int = _DEFAULTS["seeds"]
    fractions: list[float] = field(default_factory=lambda: list(_DEFAULTS["fractions"]))
    lrs: list[float] = field(default_factory=lambda: list(_DEFAULTS["lrs"]))  # learning-rate comparison; empty = skip
    # each pretrained model also at these resolutions (runs named MODEL@SIZEpx), under the same budget
    input_sizes: list[int] = field(default_factory=lambda: list(_DEFAULTS["input_sizes"]))
    lr_models: list[str] | None = _DEFAULTS["lr_models"]  # which models get the LR comparison (default: the first one)
    lr_epochs: int = _DEFAULTS["lr_epochs"]
    lr_fraction: float = _DEFAULTS["lr_fraction"]  # share of the training set the LR comparison trains on
    # per speed measurement (latency at batch 1, throughput at batch 64)
    measure_seconds: float = _DEFAULTS["measure_seconds"]
    # wall-clock budget of the runs on the whole training set, shared equally by models x seeds ("20m"), or each
    # model's (budget_per_model); runs on smaller fractions train their recipe's epochs
    budget: str | None = _DEFAULTS["budget"]
    budget_per_model: str | None = _DEFAULTS["budget_per_model"]
    # with a curation in `common`: the models also train on the data as given, in OUT/as-given, to compare
    compare_curation: bool = _DEFAULTS["compare_curation"]
    out: str | None = _DEFAULTS["out"]  # None: studies/DATA-NAME (study_dir_for)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_config(study: StudyConfig, data: str, model: str, split: Path, **extra: Any):
    """The RunConfig of one of the study's runs: the study's common options, the model's own, then `extra`."""
    from ..config import build_config

    values = {**study.common, **study.overrides.get(model, {}), "data": data, "model": base_model(model),
              "split": str(split), **extra}
    return build_config(None, values)


def parse_models(items: list[Any]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """['fast', {'efficientnet_lite0': {'input_size': 64}}] -> names + overrides."""
    names, overrides = [], {}
    for item in items:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict) and len(item) == 1:
            (name, opts), = item.items()
            if not isinstance(opts, dict):
                raise UserError(f"study model {name!r}: options must be a mapping, got {opts!r}")
            names.append(str(name))
            overrides[str(name)] = opts
        else:
            raise UserError(f"bad study model entry {item!r}: use a name or {{name: {{option: value}}}}")
    if len(set(names)) != len(names):
        raise UserError("a study lists the same model twice")
    return names, overrides


def load_study_file(path: Path) -> dict[str, Any]:
    from ..documents import read_document

    data = read_document(path, "study config") or {}
    if not isinstance(data, dict):
        raise UserError(f"study config {path} must be a mapping")
    return check_study_types(data, f"study config {path}")


def _model_entry(item: Any, where: str) -> Any:
    """{name: options}: the options checked like a run's (parse_models reports any other shape)."""
    from ..config import check_types, expect

    if not (isinstance(item, dict) and len(item) == 1):
        return item
    (name, opts), = item.items()
    return {name: check_types(expect(opts, dict, f"the options of model {name}", where), f"{where}, model {name}")}


def check_study_types(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Study keys against StudyConfig's types, run options (top level, `common`, per-model) against the run's."""
    import typing

    from ..config import check_types, expect

    hints = typing.get_type_hints(StudyConfig)
    out = {}
    for key, value in data.items():
        if key == "models":
            value = [_model_entry(item, where) for item in expect(value, list, key, where)]
        elif key == "common":
            value = check_types(expect(value, dict, key, where), where)
        elif key in STUDY_KEYS and key in hints:
            value = expect(value, hints[key], key, where)
        else:
            value = check_types({key: value}, where)[key]
        out[key] = value
    return out


STUDY_KEYS = {"data", "models", "seeds", "fractions", "lrs", "input_sizes", "lr_models", "lr_epochs", "lr_fraction",
              "out",
              "measure_seconds", "budget", "budget_per_model", "compare_curation"}


def build_study_config(file_values: dict[str, Any], cli_values: dict[str, Any]) -> StudyConfig:
    """Study keys go to StudyConfig; any other key is a run option applied to every model."""
    merged = {**file_values, **{k: v for k, v in cli_values.items() if v is not None}}
    kwargs: dict[str, Any] = {}
    common = dict(merged.pop("common", {}) or {})
    for key, value in merged.items():
        if key in STUDY_KEYS:
            kwargs[key] = value
        else:
            common[key] = value
    if "models" in kwargs:
        kwargs["models"], kwargs["overrides"] = parse_models(kwargs["models"])
    cfg = StudyConfig(**kwargs, common=common)
    if cfg.compare_curation and not cfg.common.get("curation"):
        raise UserError("--compare-curation needs --curation FILE (the curation.yaml of `cnnarena doctor --review`)")
    if cfg.out is None:
        cfg.out = str(study_dir_for(cfg.data))
    if cfg.input_sizes:
        _add_resolutions(cfg)
    from ..rundir import model_dir

    folders = [model_dir(m) for m in cfg.models]
    clash = next((m for m in cfg.models if folders.count(model_dir(m)) > 1), None)
    if clash is not None:
        raise UserError(f"two models of the study would share the folder runs/{model_dir(clash)}: rename one "
                        "layer-spec file")
    if cfg.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if not cfg.models:
        raise UserError("a study needs at least one model")
    if any(not 0 < f <= 1 for f in cfg.fractions):
        raise UserError(f"--fractions must be in (0, 1], got {cfg.fractions}")
    if 1.0 not in cfg.fractions:
        cfg.fractions = sorted(set(cfg.fractions) | {1.0})  # the comparison table is on the full training set
    if any(lr <= 0 for lr in cfg.lrs):
        raise UserError(f"--lrs must be positive, got {cfg.lrs}")
    unknown = [m for m in (cfg.lr_models or []) if m not in cfg.models]
    if unknown:
        raise UserError(f"--lr-models names {unknown[0]!r}, which is not in --models")
    if cfg.lr_epochs < 1:
        raise UserError(f"--lr-epochs must be at least 1, got {cfg.lr_epochs}")
    if not 0 < cfg.lr_fraction <= 1:
        raise UserError(f"--lr-fraction must be in (0, 1], got {cfg.lr_fraction}")
    if cfg.budget is not None and cfg.budget_per_model is not None:
        raise UserError("give --budget (shared by the models) or --budget-per-model, not both")
    from ..config import build_config

    for model in cfg.models:  # every run's options are checked before the first run trains
        build_config(None, {**cfg.common, **cfg.overrides.get(model, {}), "data": cfg.data,
                            "model": base_model(model)})
    return cfg




def _add_resolutions(cfg: StudyConfig) -> None:
    """Each pretrained model becomes one run per size of --input-sizes (photos decoded at that size), in place."""
    from ..data.sources import file_listing
    from ..models.registry import is_custom

    if any(not 16 <= s <= 1024 for s in cfg.input_sizes):
        raise UserError(f"--input-sizes must be between 16 and 1024 pixels, got {cfg.input_sizes}")
    files = file_listing(resolve_data(cfg.data)) is not None
    models = []
    for model in cfg.models:
        if is_custom(model):
            models.append(model)
            continue
        for size in sorted(set(cfg.input_sizes)):
            name = f"{model}{AT}{size}px"
            models.append(name)
            cfg.overrides[name] = {**cfg.overrides.get(model, {}), "input_size": size,
                                   **({"image_size": size} if files else {})}
        cfg.overrides.pop(model, None)
    cfg.models = models
    if cfg.lr_models:  # a backbone named there: each of its resolutions gets the comparison (unknown names stay, to
        # be reported by the check that follows)
        cfg.lr_models = [v for m in cfg.lr_models
                         for v in ([m] if m in cfg.models else [x for x in cfg.models if base_model(x) == m] or [m])]


def study_dir_for(data: str) -> Path:
    """studies/NAME for a study of `data` given no --out: its folder's or file's name, so that studies of two
    datasets never share a directory (the default study keeps studies/default: its settings are its own)."""
    import re

    if data == "auto":
        return Path("studies") / "default"
    path = Path(str(data).rstrip("/\\"))
    name = path.stem if path.suffix.lower() in (".csv", ".yaml", ".yml") else path.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "data"
    return Path("studies") / name


def check_same_study(cfg: StudyConfig) -> None:
    """A study directory holds one study: refuse, before anything is written, one that holds another dataset's
    or another set of models' study (rerunning the same study resumes it)."""
    import yaml

    from .. import rundir

    saved_path = Path(cfg.out) / rundir.STUDY
    if not saved_path.is_file():
        return
    try:
        saved = yaml.safe_load(saved_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        saved = None
    if not isinstance(saved, dict):
        raise UserError(f"--out {cfg.out}: its study.yaml cannot be read; give another --out (nothing was written)")
    data = resolve_data(cfg.data)
    differs = []
    if not _same_data(str(saved.get("data")), data):
        differs.append(f"data {saved.get('data')!r}, not {data!r}")
    if saved.get("models") != cfg.models or (saved.get("overrides") or {}) != cfg.overrides:
        differs.append(f"models {', '.join(map(str, saved.get('models') or []))}, not {', '.join(cfg.models)}"
                       if saved.get("models") != cfg.models else "other options for its models")
    if differs:
        raise UserError(f"--out {cfg.out} holds another study ({'; '.join(differs)}): give another --out, or "
                        "leave it out for studies/DATA-NAME (nothing was written)")


def _same_data(saved: str, data: str) -> bool:
    if saved == data:
        return True
    a, b = Path(saved).expanduser(), Path(data).expanduser()
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def resolve_data(data: str) -> str:
    if data != "auto":
        return data
    from ..data.idx import find_fashion_dir

    try:
        return "fashion-mnist" if find_fashion_dir(None) is not None else "digits"
    except UserError:
        return "digits"


def run_budget(cfg: StudyConfig) -> str | None:
    """The --budget of each run on the whole training set (seconds, as a string train's --budget takes)."""
    from ..train.config import parse_duration

    if cfg.budget_per_model is not None:
        return f"{parse_duration(cfg.budget_per_model) / cfg.seeds:.1f}s"
    if cfg.budget is not None:
        return f"{parse_duration(cfg.budget) / (len(cfg.models) * cfg.seeds):.1f}s"
    return None
