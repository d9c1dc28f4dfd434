"""Default training recipes per model family: declared in schema.py with every other default (re-exported here)."""

from ..schema import FAST, FAST_LARGE, PRETRAINED, REPORT_STYLE, TUNED, recipe_for, recipe_overrides

__all__ = ["FAST", "FAST_LARGE", "PRETRAINED", "REPORT_STYLE", "TUNED", "recipe_for", "recipe_overrides"]
