"""One front door for every model, like timm's create_model: a name in, a Classifier out.

Custom presets and spec files train from scratch; anything else is a pretrained backbone.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .base import Classifier, ModelMeta
from .custom import PRESETS, build_custom, load_spec, rebuild_custom


def is_custom(name: str) -> bool:
    return name in PRESETS or name.endswith((".yaml", ".yml", ".json"))


def check_model_name(name: str, *, pretrained: bool = False, weights: str | Path | None = None) -> None:
    """A UserError unless `name` is a preset, a readable layer-spec file or a pretrained backbone's name (and, with
    `pretrained`, one whose weights can be had): a run checks it before reading its data, so a misspelt --model or
    missing weights cost no decoding of a large folder."""
    if name in PRESETS:
        return
    if name.endswith((".yaml", ".yml", ".json")):
        load_spec(Path(name))
        return
    from .pretrained import is_pretrained_name

    if not is_pretrained_name(name):
        raise UserError(f"unknown model {name!r}: use a custom preset ({', '.join(PRESETS)}), a layer-spec "
                        f"YAML/JSON file, or a pretrained backbone (see `cnnarena models`)")
    if pretrained:
        from .pretrained import check_weights_available

        check_weights_available(name, weights)


def create_model(name: str, *, num_classes: int, in_chans: int, data_size: tuple[int, int], classes: list[str],
                 pretrained: bool = True, weights: Path | None = None, input_size: int | None = None,
                 head_hidden: tuple[int, ...] = (), head_dropout: float = 0.0) -> Classifier:
    if name in PRESETS:
        return build_custom(name, PRESETS[name], num_classes=num_classes, in_chans=in_chans,
                            data_size=data_size, classes=classes)
    if name.endswith((".yaml", ".yml", ".json")):
        return build_custom(Path(name).stem, load_spec(Path(name)), num_classes=num_classes, in_chans=in_chans,
                            data_size=data_size, classes=classes)
    from .pretrained import build_pretrained

    check_model_name(name)
    return build_pretrained(name, num_classes=num_classes, in_chans=in_chans, data_size=data_size, classes=classes,
                            pretrained=pretrained, weights=weights, input_size=input_size,
                            head_hidden=head_hidden, head_dropout=head_dropout)


def rebuild(meta: ModelMeta) -> Classifier:
    """The architecture described by `meta`, with untrained weights (a checkpoint is loaded next)."""
    if not meta.is_pretrained:
        return rebuild_custom(meta)
    from .pretrained import rebuild_pretrained

    return rebuild_pretrained(meta)
