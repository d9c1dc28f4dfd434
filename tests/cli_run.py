"""Running the CLI in-process, as `cnnarena ARGS` would: shared by the CLI, evaluate and error tests."""

import sys
import textwrap

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


# `python -c KILL_AFTER_STATE N cnnarena-args...`: the CLI, SIGKILLed (no clean-up) right after it commits the trainer
# state of epoch N, before the user-facing checkpoint copies and the epoch's TensorBoard events are written
KILL_AFTER_STATE = textwrap.dedent("""
    import os, signal, sys
    from cnnarena.train import checkpoint
    save, kill_at = checkpoint.save_trainer_state, int(sys.argv[1])
    def save_then_die(path, state):
        save(path, state)
        if state["epoch"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save_trainer_state = save_then_die
    from cnnarena.cli import main
    sys.argv = ["cnnarena", *sys.argv[2:]]
    main()
""")
