"""Parsers of training options that are checked before PyTorch loads (torch-free): a mistake is one line at once."""

from __future__ import annotations

import re

from ..errors import UserError

BN_MODES = ("frozen", "train")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


def parse_unfreeze(value: str | int | None) -> int | None:
    """'all' -> None (every stage), '2' -> the last 2 stages."""
    if value is None or str(value).lower() == "all":
        return None
    try:
        k = int(value)
    except ValueError:
        raise UserError(f"--unfreeze must be a number of stages or 'all', got {value!r}") from None
    if k < 1:
        raise UserError("--unfreeze must be at least 1 (or 'all')")
    return k


def parse_bn_mode(value: str) -> bool:
    """'frozen' -> True (BatchNorm keeps its ImageNet statistics in phase 2), 'train' -> False."""
    if value not in BN_MODES:
        raise UserError(f"--finetune-bn must be one of {', '.join(BN_MODES)}, got {value!r}")
    return value == "frozen"


def parse_memory(text: str | None) -> int | None:
    """'4GB', '3.5G', '800M', '800MiB' -> bytes; 'auto' or None -> None (the default budget); 'none' -> 0 (no cap)."""
    if text is None or str(text).lower() == "auto":
        return None
    if str(text).lower() in ("none", "off", "0"):
        return 0
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise UserError(f"--max-memory expects a size like 4GB, 3.5G or 800M (or auto, none), got {str(text)[:40]!r}")
    value = float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " ")
    if not value <= 2**50:  # a pebibyte; also what a 400-digit number (inf) fails
        raise UserError(f"--max-memory {str(text)[:40]} is larger than any machine's memory: give a size like 4GB")
    if value < 64 * 2**20:
        raise UserError(f"--max-memory {text} is below 64 MB: nothing trains in that")
    return int(value)


def check_device_name(name: str) -> None:
    """The device's name only; whether it is here is for train.loop.resolve_device, once PyTorch has loaded."""
    if not DEVICE.fullmatch(str(name)):
        raise UserError(f"unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps")
