"""`python -m cnnarena ...` (and `torchrun -m cnnarena ...`): the same as the `cnnarena` command."""

from .cli import command

command()
