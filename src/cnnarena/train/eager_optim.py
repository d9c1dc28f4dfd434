"""torch.optim optimisers that run eagerly without importing torch's compiler.

`Optimizer.step` imports `torch._dynamo` on every call (to place graph breaks for torch.compile), and
`add_param_group`, `zero_grad`, `state_dict` and `load_state_dict` import it on their first call (they
are wrapped in `torch._disable_dynamo`). That import costs 1.1-1.9 s on a 2-core CPU, a third of a short
run, and cnnarena never compiles an optimiser. `eager(kind)` is a subclass of `kind` whose methods are
the undecorated ones, which do the same in eager mode (graph breaks are no-ops there); `step` keeps the
decorator's grad mode. torch's own classes, and the rest of the process, are not changed.
"""

from __future__ import annotations

import functools
import inspect

import torch

_DYNAMO_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict", "step")


@functools.cache
def eager(kind: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """`kind`'s subclass that never imports torch._dynamo, or `kind` where its methods are not as expected."""
    # unwrap all layers: a plain optimiser made before wraps `kind.step` once more (torch's profiling hook)
    raw = {name: inspect.unwrap(getattr(kind, name)) for name in _DYNAMO_WRAPPED}
    if any(method is getattr(kind, name) for name, method in raw.items()):
        return kind  # a torch whose optimiser is built differently: keep it as it is
    raw_step = raw.pop("step")

    def step(self, closure=None):
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return raw_step(self, closure)

    name = f"Eager{kind.__name__}"
    return type(name, (kind,), {**raw, "step": step, "__module__": __name__, "__qualname__": name})


def __getattr__(name: str):
    """`EagerSGD` and its kin by name, so that pickle finds the classes `eager` made."""
    kind = getattr(torch.optim, name.removeprefix("Eager"), None) if name.startswith("Eager") else None
    if isinstance(kind, type) and issubclass(kind, torch.optim.Optimizer):
        return eager(kind)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
