"""Fixtures shared by several test modules."""

from pathlib import Path

import pytest

from cnnarena.config import build_config
from cnnarena.run import train_run


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """One trained digits run per test session, shared by the predict, export, serve and web-page tests."""
    run = tmp_path_factory.getbasetemp() / "shared-digits-run"
    train_run(build_config(None, {"data": "digits", "epochs": 3, "lr": 5e-3}), run, progress=False)
    return run
