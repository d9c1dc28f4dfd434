"""Models: custom CNNs (layer specs and presets) and pretrained backbones, one registry over both.

Also the API's `cnnarena.models(pattern=None, all=False)`: the models one can name, as a DataFrame
(callable_package.py).
"""

from ..callable_package import make_callable

make_callable(__name__, "models")
