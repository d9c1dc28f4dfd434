"""Fixtures shared by several test modules."""

from pathlib import Path

import pytest
import torch

from cnnarena.config import build_config
from cnnarena.run import train_run


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """One trained digits run per test session, shared by the predict, export, serve and web-page tests."""
    run = tmp_path_factory.getbasetemp() / "shared-digits-run"
    train_run(build_config(None, {"data": "digits", "epochs": 3, "lr": 5e-3}), run, progress=False)
    return run


@pytest.fixture(scope="module")
def offline_one_thread(tmp_path_factory):
    """No network, empty weight caches (Lite0's weights come from the installed package), one thread (the cores
    are shared: several threads made the Lite0 runs up to 7x slower). Yields the environment it set."""
    tmp = tmp_path_factory.mktemp("caches")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hf"), "TORCH_HOME": str(tmp / "torch")}
    with pytest.MonkeyPatch.context() as mp:
        import huggingface_hub.constants

        for key, value in env.items():
            mp.setenv(key, value)
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        yield env
        torch.set_num_threads(before)
