"""The default study (the README's main command): declared in schema.py with every other default (re-exported)."""

from ..schema import AUTO_DATA_ONLY, DEFAULT_STUDY

__all__ = ["AUTO_DATA_ONLY", "DEFAULT_STUDY"]
