"""What augmentation to apply (torch-free, so that options are checked before PyTorch loads): presets and the
'flip,translate=2' syntax. data/augment.py applies it to batches."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import UserError


@dataclass
class AugmentConfig:
    flip: bool = False  # horizontal flip with p=0.5 (wrong for digits, right for clothes/photos)
    translate: int = 0  # random shift of up to this many pixels (reflect-padded), like a random crop
    rotation: float = 0.0  # degrees, uniform in [-rotation, rotation]
    zoom: float = 0.0  # scale uniform in [1-zoom, 1+zoom]
    shear: float = 0.0  # degrees
    brightness: float = 0.0  # multiply by uniform [1-b, 1+b]
    contrast: float = 0.0  # blend with the image mean by uniform [1-c, 1+c]
    saturation: float = 0.0  # blend with grayscale (RGB only)
    erase: float = 0.0  # probability of blanking a random rectangle of 2-33% of the image (random erasing)

    @property
    def active(self) -> bool:
        return any(v for v in asdict(self).values())


PRESETS = {
    "none": AugmentConfig(),
    "flip": AugmentConfig(flip=True),
    "light": AugmentConfig(flip=True, translate=2),
    "standard": AugmentConfig(flip=True, translate=3, rotation=10, zoom=0.1),
    "strong": AugmentConfig(flip=True, translate=4, rotation=15, zoom=0.15, shear=8,
                            brightness=0.2, contrast=0.2, saturation=0.2),
}


def parse_augment(value: str | dict | AugmentConfig | None) -> AugmentConfig:
    """A preset name, 'flip,translate=2,rotation=10', or a dict (from a YAML config)."""
    if value is None:
        return AugmentConfig()
    if isinstance(value, AugmentConfig):
        return value
    fields = AugmentConfig.__dataclass_fields__
    if isinstance(value, dict):
        unknown = set(value) - set(fields)
        if unknown:
            raise UserError(f"unknown augmentation {sorted(unknown)[0]!r}; known: {', '.join(fields)}")
        return _checked(AugmentConfig(**value))
    if value in PRESETS:
        return PRESETS[value]
    out: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, _, num = part.partition("=")
        if name not in fields:
            raise UserError(f"unknown augmentation {name!r}: use a preset ({', '.join(PRESETS)}) "
                            f"or a list like 'flip,translate=2,rotation=10'")
        try:
            out[name] = True if name == "flip" else (int(num) if name == "translate" else float(num))
        except ValueError:
            raise UserError(f"augmentation {name!r} needs a number, e.g. {name}=2") from None
    return _checked(AugmentConfig(**out))


# the largest sensible value of each strength (a NaN or an infinite one trained to chance level, silently)
LIMITS = {"translate": 512, "rotation": 180.0, "zoom": 0.9, "shear": 45.0, "brightness": 1.0, "contrast": 1.0,
          "saturation": 1.0, "erase": 1.0}


def _checked(cfg: AugmentConfig) -> AugmentConfig:
    import math

    for name, top in LIMITS.items():
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not 0 <= value <= top:
            raise UserError(f"augmentation {name} must be a number from 0 to {top:g}, got {value!r}")
    return cfg


def check_fits(cfg: AugmentConfig, image_side: int) -> None:
    """A shift as large as the image has nothing to reflect into."""
    if cfg.translate and cfg.translate >= image_side:
        raise UserError(f"--augment translate={cfg.translate} needs images larger than {cfg.translate} px; these are "
                        f"{image_side} px: use translate={max(1, image_side // 4)} or less")
