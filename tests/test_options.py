"""Every option a user can get wrong is refused with a message naming it, before any data is read or any epoch
trains (a negative --grad-clip used to train silently to 10% accuracy; --layer-decay 5 failed after phase 1)."""

import subprocess
import sys

import pytest
import torch

from cnnarena.config import build_config
from cnnarena.errors import UserError
from cnnarena.study.config import build_study_config

BAD_RUN_OPTIONS = {
    "--grad-clip is a maximum gradient norm: it must be positive (got -1)": {"grad_clip": -1},
    "--weight-decay must be >= 0 (got -0.1)": {"weight_decay": -0.1},
    "--momentum must be in [0, 1) (got 3)": {"momentum": 3},
    "--early-stopping is a patience in epochs: at least 1 (got 0)": {"early_stopping": 0},
    "--reduce-on-plateau is a patience in epochs: at least 1 (got 0)": {"reduce_on_plateau": 0},
    "--max-minutes must be positive (got 0)": {"max_minutes": 0},
    "--freeze-epochs must be >= 0 (got -1)": {"freeze_epochs": -1},
    "--finetune-lr-scale must be positive (got -1)": {"finetune_lr_scale": -1},
    "--layer-decay must be in (0, 1] (got 5)": {"layer_decay": 5},
    "--head-dropout must be in [0, 1) (got 1)": {"head_dropout": 1},
    "--val-frac and --test-frac must be in [0, 1) with a sum below 1 (got 0.9, 0.2)": {"val_frac": 0.9},
    "--input-size must be between 8 and 4096 pixels (got 100000)": {"input_size": 100_000},
    "--unfreeze must be a number of stages or 'all', got 'last'": {"unfreeze": "last"},
    "--finetune-bn must be one of frozen, train, got 'sometimes'": {"finetune_bn": "sometimes"},
    "unknown --device 'tpu'; use auto, cpu, cuda, cuda:N or mps": {"device": "tpu"},
}


@pytest.mark.parametrize("message", BAD_RUN_OPTIONS)
def test_bad_run_options_are_refused_with_their_name(message):
    with pytest.raises(UserError) as e:
        build_config(None, {"data": "digits", "model": "efficientnet_lite0", **BAD_RUN_OPTIONS[message]})
    assert str(e.value) == message


@pytest.mark.slow  # a CLI subprocess
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_device_that_is_not_here_is_refused_through_the_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cnnarena.cli", "train", "digits", "--device", "cuda",
                             "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --device cuda: no CUDA GPU is available to PyTorch here (use --device cpu or auto)")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_study_checks_every_models_options_before_the_first_run():
    bad = {"data": "digits", "models": ["fast", {"simple-2conv": {"momentum": 3}}]}
    with pytest.raises(UserError, match=r"--momentum must be in \[0, 1\) \(got 3\)"):
        build_study_config(bad, {})
    with pytest.raises(UserError, match=r"--lr-fraction must be in \(0, 1\], got 0"):
        build_study_config({"data": "digits", "models": ["fast"], "lr_fraction": 0}, {})
    with pytest.raises(UserError, match="--lr-epochs must be at least 1, got 0"):
        build_study_config({"data": "digits", "models": ["fast"], "lr_epochs": 0}, {})
