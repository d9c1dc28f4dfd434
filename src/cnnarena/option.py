"""What an option is: its name, type, default and help (schema.py and schema_commands.py declare them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path  # noqa: F401 - kinds name it
from typing import Any

MISSING = object()  # not an option of the run's config (a command's own option)
LARGEST_WHOLE = 2**31 - 1  # no count, size or seed a user types is larger; beyond it libraries overflow
SEED_RANGE = (0, 2**32 - 1)  # what NumPy and PyTorch accept as a seed


def number_problem(value: Any) -> str | None:
    """Why a number a user gave cannot be used whatever the option (not finite, or too large), or None."""
    import math

    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if isinstance(value, int) and abs(value) > LARGEST_WHOLE:
        return f"must be at most {LARGEST_WHOLE:,} in size, got a {len(str(abs(value)))}-digit number"
    return None


@dataclass(frozen=True)
class Option:
    """One option. `default` is the config's default for a run or study option (the CLI passes None when it is not
    given, so recipes and --config files can fill it), and the value itself for a command's own option."""

    name: str
    kind: Any  # int, float, str, bool, Path, "flag" (on when given), "ints" / "floats" / "names" (comma lists)
    default: Any = None
    help: str = ""
    short: str | None = None
    cli: str | None = None  # the flag when it is not --name-with-dashes
    shown: str | None = None  # the bracketed default in --help, when it is not worked out from the defaults
    config: bool = True  # a field of the run's (or study's) config
    hidden: bool = False  # a config field with no command-line option
    low: float | None = None
    high: float | None = None
    argument: bool = False  # a positional argument (DATA, RUN_DIR, PATHS...)
    many: bool = False  # an argument that takes one or more values
    required: bool = False

    @property
    def flag(self) -> str:
        return self.cli or "--" + self.name.replace("_", "-")


def _opts(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


DATA_HELP = ("digits, fashion-mnist, cifar10, hf:NAME[:CONFIG] (a Hugging Face dataset), or a path: class-folder "
             "directory, CSV of path,label, cifar-10-batches-py, a save_to_disk or Parquet folder")
DATA = Option("data", str, None, DATA_HELP, argument=True, required=True, config=False)
