"""Reading the YAML and JSON files a user hands cnnarena (configs, layer specs, class maps, study files), bounded.

A small file can still describe an enormous value: YAML aliases of aliases ("billion laughs") expand exponentially
once anything walks the result, and deep nesting overflows the parser's recursion. So a document is read only when
the file is at most MAX_BYTES, it uses at most MAX_ALIASES aliases, nests at most MAX_DEPTH levels, and expands to
at most MAX_VALUES values counted with repeats. Errors name the file and the limit, never the value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

MAX_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_DEPTH = 64
MAX_VALUES = 100_000


class _CountingLoader(yaml.SafeLoader):
    """SafeLoader that stops at MAX_ALIASES alias uses, while the node graph is still small."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _TooLarge(f"uses more than {MAX_ALIASES} YAML aliases")
        return super().compose_node(parent, index)


class _TooLarge(Exception):
    pass


def read_document(path: str | Path, what: str) -> Any:
    """The parsed content of a YAML (or, by suffix, JSON) file; `what` names it in errors ("config file")."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise UserError(f"{what} {path} is {size / 2**20:.1f} MB: more than the {MAX_BYTES >> 20} MB a "
                            "config-like file may hold")
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory, not a file") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror}") from None
    return parse_document(text, f"{what} {path}", as_json=path.suffix.lower() == ".json")


def parse_document(text: str, where: str, *, as_json: bool = False) -> Any:
    try:
        if as_json:
            value = json.loads(text)
        else:
            loader = _CountingLoader(text)
            try:
                value = loader.get_single_data()
            finally:
                loader.dispose()
    except _TooLarge as e:
        raise UserError(f"{where} {e}: refusing a document that may expand without bound") from None
    except RecursionError:
        raise UserError(f"{where} nests deeper than {MAX_DEPTH} levels") from None
    except (yaml.YAMLError, ValueError) as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(f"cannot parse {where}: {first}") from None
    check_bounded(value, where)
    return value


def check_bounded(value: Any, where: str) -> None:
    """Walk the value as anything using it would (shared references counted every time), within the limits."""
    stack, count = [(value, 0)], 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise UserError(f"{where} expands to more than {MAX_VALUES:,} values (YAML aliases?): refusing it")
        if depth > MAX_DEPTH:
            raise UserError(f"{where} nests deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for kv in item.items() for v in kv)
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
