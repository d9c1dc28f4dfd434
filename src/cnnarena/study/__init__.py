"""Studies: many runs on one split, the comparison, tuning, shared storage.

Also the API's `cnnarena.study(data, models=..., out=None, **options) -> Study` (callable_package.py).
"""

from ..callable_package import make_callable

make_callable(__name__, "study")
