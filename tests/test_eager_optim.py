"""The optimisers that skip torch._dynamo's import update exactly as torch's own, and save and load the same."""

import pickle
import subprocess
import sys

import pytest
import torch

from cnnarena.train.eager_optim import eager


def _trained(kind, options, steps=4):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    optimizer = kind(model.parameters(), lr=0.05, weight_decay=1e-3, **options)
    images, labels = torch.randn(8, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("kind, options", [
    (torch.optim.SGD, {"momentum": 0.9, "nesterov": True, "fused": True}),
    (torch.optim.SGD, {"momentum": 0.9}),
    (torch.optim.Adam, {"fused": True}),
    (torch.optim.AdamW, {}),
])
def test_an_eager_optimiser_steps_bit_identically_to_torchs(kind, options):
    stock_model, stock = _trained(kind, options)
    eager_model, ours = _trained(eager(kind), options)
    assert isinstance(ours, kind) and type(ours) is not kind
    for a, b in zip(stock_model.parameters(), eager_model.parameters(), strict=True):
        assert torch.equal(a, b)
    for name, value in stock.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(ours.state_dict()["state"][0][name])), name
    assert torch.is_grad_enabled()  # the step gave back the grad mode it found


def test_an_eager_optimiser_resumes_from_a_state_saved_by_torchs():
    _, stock = _trained(torch.optim.Adam, {})
    _, ours = _trained(eager(torch.optim.Adam), {}, steps=0)
    ours.load_state_dict(stock.state_dict())
    assert ours.state_dict()["state"][0]["step"] == 4
    ours.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.1})
    assert [group["lr"] for group in ours.param_groups] == [0.05, 0.1]


def test_an_eager_optimiser_made_after_one_of_torchs_still_skips_torch_dynamo():
    """A plain optimiser's first construction wraps its class's step once more (torch's profiling hook); the eager
    class must unwrap every layer. (Done by hand here: constructing torch's own would import torch._dynamo.)"""
    code = ("import sys, torch; from cnnarena.train.eager_optim import eager; SGD = torch.optim.SGD; "
            "SGD.step = SGD.profile_hook_step(SGD.step); SGD.step.hooked = True; "
            "w = torch.nn.Parameter(torch.ones(2)); opt = eager(SGD)([w], lr=0.1); "
            "(w ** 2).sum().backward(); opt.step(); opt.zero_grad(); "
            "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'; "
            "assert torch.allclose(w.detach(), torch.full((2,), 0.8))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_eager_optimiser_pickles():
    _, ours = _trained(eager(torch.optim.SGD), {"momentum": 0.9})
    again = pickle.loads(pickle.dumps(ours))
    assert type(again) is type(ours) and again.state_dict()["param_groups"] == ours.state_dict()["param_groups"]
