"""The study's training-memory column: measured with the batch size each run trained with, counting each saved
activation once and the weights apart, and with a fine-tuned model's frozen layers left frozen. Real runs on
digits, no mocks."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from cnnarena.config import build_config
from cnnarena.models.artefacts import load_model
from cnnarena.models.base import count_parameters
from cnnarena.run import train_run
from cnnarena.study.config import build_study_config
from cnnarena.study.measure import training_memory_bytes
from cnnarena.study.runner import run_study

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("offline_one_thread")  # conftest.py: offline, one thread


@pytest.fixture(scope="module")
def study_twice(tmp_path_factory):
    """One simple-2conv study asked for batch 128, run, then run again (the second reuses the finished run)."""
    out = tmp_path_factory.mktemp("memory-study") / "s"
    cfg = build_study_config({}, {"data": "digits", "models": ["simple-2conv"], "seeds": 1, "fractions": [1.0],
                                  "lrs": [], "epochs": 1, "batch_size": 128, "measure_seconds": 0.05,
                                  "out": str(out)})
    first = run_study(cfg)
    second = run_study(cfg)
    return out / "runs" / "simple-2conv" / "f=1-s=0", first["table"][0], second["table"][0]


@pytest.mark.slow  # ~9 s: runs a study twice
def test_rerunning_a_study_measures_the_batch_size_the_run_trained_with(study_twice):
    run_dir, first, second = study_twice
    trained_with = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["batch_size"]
    assert trained_with == 64  # 1,078 training images: batch 128 was fitted down to 64 (16 steps an epoch)
    assert first["train_memory_mb"] == second["train_memory_mb"]  # was 3.4 MB, then 5.5 MB (batch 128)
    model = load_model(run_dir / "model")
    for batch, row in ((64, first), (64, second)):
        assert row["train_memory_mb"] == round(training_memory_bytes(model, batch, CPU, 2) / 2**20, 1)
    assert round(training_memory_bytes(model, 128, CPU, 2) / 2**20, 1) != first["train_memory_mb"]


def saved_for_backward(loss: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor autograd keeps for backward, found by walking the graph from the loss (each node's _saved_*
    attributes; saved_tensors of custom Functions): independent of the saved-tensor hooks measure.py uses."""
    found, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names = [n for n in dir(node) if n.startswith("_saved_")]
        values = [getattr(node, n) for n in names]
        if not names and hasattr(node, "saved_tensors"):
            values = list(node.saved_tensors)
        for value in values:
            items = value if isinstance(value, (list, tuple)) else [value]
            found += [v for v in items if isinstance(v, torch.Tensor)]
        stack += [child for child, _ in node.next_functions]
    return found


@pytest.mark.slow  # uses that study's run
def test_cpu_estimate_counts_each_saved_storage_once_and_weights_apart(study_twice):
    run_dir = study_twice[0]
    # NCHW: the layout of the count by hand below, in which PyTorch's own layers run (a loaded model is
    # channels-last, as it trained, and runs cnnarena's fused BatchNorm -> pool -> ReLU kernels, which save less)
    model = load_model(run_dir / "model").to(memory_format=torch.contiguous_format).train()
    batch, slots = 64, 2  # adam
    x = torch.rand(batch, model.meta.in_chans, *model.meta.data_size)
    loss = F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long))
    state = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    activations = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                   for t in saved_for_backward(loss) if t.untyped_storage().data_ptr() not in state}
    # simple-2conv at batch 64 on 8x8 digits, by hand (float32 = 4 bytes, indices int64 = 8): conv1's input,
    # bn1's input + batch mean/invstd, pool1's input + indices, relu1's output (= conv2's input), bn2's input +
    # mean/invstd, pool2's input + indices, relu2's output (= fc1's flattened input: one storage), relu3 and
    # relu4's outputs (= fc2's, fc3's inputs), log-softmax's output, the targets, nll's total weight.
    by_hand = (64 * 1 * 8 * 8 * 4 + 64 * 32 * 8 * 8 * 4 + 2 * 32 * 4 + 64 * 32 * 8 * 8 * 4 + 64 * 32 * 4 * 4 * 8
               + 64 * 32 * 4 * 4 * 4 + 64 * 64 * 4 * 4 * 4 + 2 * 64 * 4 + 64 * 64 * 4 * 4 * 4 + 64 * 64 * 2 * 2 * 8
               + 64 * 64 * 2 * 2 * 4 + 64 * 128 * 4 + 64 * 64 * 4 + 64 * 10 * 4 + 64 * 8 + 4)
    assert sum(activations.values()) == by_hand == 2_232_068
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())  # BatchNorm statistics, input mean/std
    assert (weights, buffers) == (243_240, 792)
    expected = by_hand + weights + buffers + weights * (1 + slots)  # every parameter trains: grads + Adam's 2
    # was 3,512,996: the weights the layers save (241,664 bytes), relu2's output twice (65,536) and the BatchNorm
    # running statistics (768) counted as activations, the buffers (792) not in the weights
    assert training_memory_bytes(model, batch, CPU, slots) == expected == 3_205_820
    as_trained = load_model(run_dir / "model").train()  # channels-last, as the study measures it
    assert training_memory_bytes(as_trained, batch, CPU, slots) <= expected
    from cnnarena.study.measure import cpu_training_memory

    assert cpu_training_memory(model, batch, slots) == {"activations": by_hand, "weights": weights + buffers,
                                                        "grads": weights, "optimizer": 2 * weights}


@pytest.fixture(scope="module")
def lite0_finetuned(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("lite0-memory") / "run"
    metrics = train_run(build_config(None, dict(data="digits", model="efficientnet_lite0", input_size=32,
                                                fraction=0.05, freeze_epochs=1, epochs=1, unfreeze="1")),
                        run)
    return run, metrics


@pytest.mark.slow  # an EfficientNet-Lite0 fine-tune
def test_finetuned_model_is_measured_with_its_final_freeze_state(lite0_finetuned):
    from cnnarena.study.measure import cpu_training_memory
    from cnnarena.study.runner import load_as_trained

    run, metrics = lite0_finetuned
    total = metrics["params_total"]
    trainable = metrics["params_trainable_final"]  # the last backbone stage + the head
    assert trainable < total
    assert count_parameters(load_model(run / "model")) == (total, trainable)  # model.json keeps the freeze state
    everything = load_model(run / "model").requires_grad_(True)  # what the study measured before: all trainable

    model = load_as_trained(run, metrics)
    assert count_parameters(model) == (total, trainable)
    assert model.net.bn_frozen  # --finetune-bn frozen (the default), as in training
    batch = yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"]
    parts = cpu_training_memory(model, batch, 2)
    assert parts["grads"] == 4 * trainable and parts["optimizer"] == 2 * 4 * trainable
    assert parts["weights"] == sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    # frozen stages also keep no activations for backward
    assert parts["activations"] < cpu_training_memory(everything, batch, 2)["activations"]


@pytest.mark.slow  # an EfficientNet-Lite0 fine-tune
def test_a_freeze_state_that_does_not_reproduce_the_run_is_an_error(lite0_finetuned, tmp_path):
    from cnnarena.study.runner import load_as_trained

    run, metrics = lite0_finetuned
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["unfreeze"] = "all"  # not what the run trained with: the freeze state is not re-derived from the config
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert count_parameters(load_as_trained(copy, metrics))[1] == metrics["params_trainable_final"]
    saved = json.loads((copy / "model.json").read_text())
    legacy = {k: v for k, v in saved.items() if k != "freeze"}  # as saved before model.json recorded it
    (copy / "model.json").write_text(json.dumps(legacy))
    cfg["unfreeze"] = "1"
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert count_parameters(load_as_trained(copy, metrics))[1] == metrics["params_trainable_final"]  # replayed
    saved["freeze"]["frozen"] = []  # a model file whose freeze state is not the one the run ended with
    (copy / "model.json").write_text(json.dumps(saved))
    with pytest.raises(RuntimeError, match="parameters trainable as saved with the model"):
        load_as_trained(copy, metrics)
