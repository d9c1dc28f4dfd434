"""cnnarena: custom CNN from scratch vs ImageNet-pretrained fine-tuning, measured honestly.

The front door, for a notebook or a script:

    import cnnarena
    report = cnnarena.doctor("photos/")                      # what is wrong in the data
    study = cnnarena.study("photos/", models=["fast", "efficientnet_lite0"], budget_per_model="2m")
    study.winner.predict("photos/cat/001.jpg", top_k=3)      # the best run, as a Run
    study.winner.export("onnx")                              # deploy it

`train`, `study`, `load`, `doctor` and `models`, and the `Run`, `Study` and `DataReport` they return, are the
public API; the names are loaded on first use, so `import cnnarena` costs no PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["train", "study", "load", "doctor", "models", "Run", "Study", "DataReport", "UserError", "__version__"]

if TYPE_CHECKING:
    from .api import doctor, load, models, study, train
    from .errors import UserError
    from .results import DataReport, Run, Study

_FROM = {"load": "api", "doctor": "api", "Run": "results", "Study": "results",
         "DataReport": "results", "UserError": "errors"}


def __getattr__(name: str):
    import importlib

    if name in ("train", "study", "models"):  # subpackages that are callable as the API's verbs
        return importlib.import_module(f".{name}", __name__)
    if name in _FROM:
        return getattr(importlib.import_module(f".{_FROM[name]}", __name__), name)
    raise AttributeError(f"module 'cnnarena' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
