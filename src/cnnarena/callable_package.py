"""`cnnarena.train`, `cnnarena.study` and `cnnarena.models` are both subpackages and the API's verbs.

Python sets a package's attribute to its subpackage when the subpackage is imported, so a plain function of the same
name would be replaced as soon as training starts. Instead each of these packages is made callable: calling it calls
the API function of its name, and `inspect.signature` and `help` show that function.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types


def make_callable(package: str, function: str) -> None:
    """Calling the module `package` calls `cnnarena.api.<function>`."""

    def target():
        # the one call up the layers, by design: the API sits above every package it lends its verbs to
        return getattr(importlib.import_module("cnnarena.api"), function)

    class CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return target()(*args, **kwargs)

        @property
        def __signature__(self) -> inspect.Signature:
            return inspect.signature(target())

    sys.modules[package].__class__ = CallablePackage
