"""Training: the loop, callbacks, schedules, checkpoints, fine-tuning, budgets, torchrun.

Also the API's `cnnarena.train(data, model="fast", out=None, **options) -> Run` (callable_package.py).
"""

from ..callable_package import make_callable

make_callable(__name__, "train")
