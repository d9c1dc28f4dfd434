"""Running the CLI in-process, as `cnnarena ARGS` would: shared by the CLI, evaluate and error tests."""

import sys

import pytest

from cnnarena import runtime
from cnnarena.cli import main


def run_cli(argv, monkeypatch, capsys):
    """(exit code, stdout, stderr) of `cnnarena *argv`."""
    monkeypatch.setattr(sys, "argv", ["cnnarena", *argv])
    with pytest.raises(SystemExit) as exit_info, runtime.using():  # main()'s process-wide settings end here
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err
