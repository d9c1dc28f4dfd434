"""Models: custom CNNs (layer specs and presets) and pretrained backbones, one registry over both.

`cnnarena.models` is both this package and the public function `cnnarena.models(pattern=None, all=False)`: the
package is callable, so the name means the same whichever was imported first.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, pattern: str | None = None, all: bool = False):  # noqa: A002 - `cnnarena models --all`
        """The custom CNN presets and the pretrained backbones as a pandas DataFrame (`cnnarena models`)."""
        from .catalog import model_frame

        return model_frame(pattern, everything=all)


sys.modules[__name__].__class__ = _CallablePackage
