"""int8 ONNX (calibrated, judged on the test split, refused past --max-drop, served), TorchScript and torch.export
archives: each reproduces the run's model."""

import json
import os
import shutil
import tempfile

import numpy as np
import onnxruntime as ort
import pytest
import torch
from cli_run import run_cli
from fastapi.testclient import TestClient
from PIL import Image

from cnnarena.errors import UserError
from cnnarena.evaluate.predict import load_run_model
from cnnarena.export.onnx import export_onnx
from cnnarena.export.quantize import quantize_run, run_images
from cnnarena.export.speed import threads_for_batch
from cnnarena.serve.app import create_app
from cnnarena.serve.backend import load_backend


@pytest.fixture
def run(digits_run, tmp_path):
    """A copy of the session's digits run: exports write into it."""
    copy = tmp_path / "run"
    shutil.copytree(digits_run, copy)
    return copy


@pytest.mark.slow  # calibration, two timed models and a server backend
def test_int8_export_is_checked_on_the_test_split_and_served(run, monkeypatch, capsys):
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # Linux's tmpfs: temp files on another disk than the run
    with tempfile.TemporaryDirectory(dir=shm) as scratch, monkeypatch.context() as patch:
        patch.setattr(tempfile, "tempdir", scratch)
        code, out, err = run_cli(["export", str(run), "--int8", "--timing", "0.5"], monkeypatch, capsys)
    assert code == 0, err
    card = json.loads((run / "model.int8.card.json").read_text())
    acc = card["accuracy"]
    split = run_images(run)
    session = ort.InferenceSession(str(run / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"images": split.test.images.numpy().astype(np.float32) / 255})[0]
    assert acc["int8"] == pytest.approx(float((logits.argmax(1) == split.test.labels.numpy()).mean()))
    assert acc["test_images"] == len(split.test) and acc["drop_points"] <= 1.0
    assert acc["float"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test_accuracy"], abs=1e-6)
    assert set(card["images_per_second"]["int8"]) == {"1", "64"} and card["speedup"]["64"] > 0
    assert card["quantization"]["calibration_images"] == 256 and card["classes"] == [str(i) for i in range(10)]
    stem = card["quantization"]["stem"]  # the digits CNN reads 1 channel: both stems were quantized and timed
    assert set(stem["measured"]) == {"int8 stem", "float stem"} and set(stem["measured"]["float stem"]) == {"1", "64"}
    if stem["float"]:
        assert set(stem["nodes"]) <= set(card["quantization"]["float_nodes"])
    assert f"test accuracy: int8 {acc['int8']:.4f}" in out and "batch 64: int8" in out
    threads, by_threads = card["intra_op_threads"], card["images_per_second_by_threads"]
    for model in ("float", "int8"):  # the card's rate at each batch size is the faster thread setting's
        for b in ("1", "64"):
            assert set(by_threads[model][b]) == {"0", "1"} and threads[model][b] in (0, 1)
            assert card["images_per_second"][model][b] == max(by_threads[model][b].values())
            assert card["images_per_second"][model][b] == by_threads[model][b][str(threads[model][b])]
    assert card["speedup_default_threads"]["1"] == pytest.approx(
        by_threads["int8"]["1"]["0"] / by_threads["float"]["1"]["0"], abs=0.01)
    served = load_backend(run, "onnx-int8").sessions  # serve runs each batch with the thread count measured for it
    for batch, measured in (("1", 1), ("64", 64)):
        assert served.for_batch(measured).get_session_options().intra_op_num_threads == threads["int8"][batch]
    card_path = run / "model.int8.card.json"  # whatever this machine measured: a card that names both settings
    named = {"float": {"1": 0, "64": 0}, "int8": {"1": 1, "64": 0}}
    card_path.write_text(json.dumps(card | {"intra_op_threads": named}))
    served = load_backend(run, "onnx-int8").sessions
    assert [served.for_batch(n).get_session_options().intra_op_num_threads for n in (1, 8, 9, 64)] == [1, 1, 0, 0]
    assert set(load_backend(run, "onnx").sessions.sessions) == {0}  # float: ONNX Runtime's default threads

    with TestClient(create_app(run, backend="onnx-int8")) as client:  # served as it was checked
        assert client.get("/v1/health").json()["backend"] == "onnx-int8"
        img = Image.fromarray(split.test.images[0, 0].numpy(), "L")
        import io

        data = io.BytesIO()
        img.save(data, "PNG")
        body = client.post("/v1/predict", files={"file": ("a.png", data.getvalue(), "image/png")}).json()
        top = body["results"][0]["predictions"][0]
        assert top["label"] == str(int(logits[0].argmax()))


def test_an_int8_model_that_loses_too_much_is_not_written(run, tmp_path, monkeypatch, capsys):
    # the digits model loses no accuracy in int8 (it gains 0.3 points): a bound below any possible change refuses it
    exported = export_onnx(run, tmp_path / "float" / "model.onnx")
    with pytest.raises(UserError) as refused:
        quantize_run(run, exported.onnx_path, run / "model.int8.onnx", max_drop=-100, speed_seconds=0.1)
    assert str(refused.value).startswith("the int8 model loses ")
    assert str(refused.value).endswith("more than --max-drop -100: not written")
    assert not (run / "model.int8.onnx").exists() and not (run / "model.int8.card.json").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".model.int8")]  # no temp file left
    code, _, err = run_cli(["serve", str(run), "--backend", "onnx-int8", "--port", "0"], monkeypatch, capsys)
    assert code == 2 and f"no int8 model of these weights in {run}: run `cnnarena export {run} --int8` first" in err


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_pytorch_exports_reproduce_the_model(run, fmt, monkeypatch, capsys):
    code, out, err = run_cli(["export", str(run), "--format", fmt], monkeypatch, capsys)
    assert code == 0, err
    path = run / ("model.pt" if fmt == "torchscript" else "model.pt2")
    card = json.loads((run / f"{path.name}.card.json").read_text())
    assert card["export_format"] == fmt and card["classes"] == [str(i) for i in range(10)]
    loaded = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    model = load_run_model(run).eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert not (run / "model.card.json").exists()  # the ONNX card's name stays free
    code, _, err = run_cli(["export", str(run), "--format", fmt, "--int8"], monkeypatch, capsys)
    assert code == 2 and f"--int8 quantizes ONNX and TFLite models: not with --format {fmt}" in err


def test_a_relu_after_a_max_pool_moves_before_it_and_the_graph_computes_the_same(tmp_path):
    import onnx

    from cnnarena.export.int8_rewrites import relu_before_max_pool

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.MaxPool2d(2), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2)).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.rand(1, 1, 16, 16),), str(path), dynamo=False, input_names=["x"])
    model = onnx.load(str(path))
    assert relu_before_max_pool(model) == 1  # the second pair is in that order already
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool"]
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).normal(size=(1, 1, 16, 16)).astype(np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)


def test_flattening_channels_last_computes_the_same_and_the_stem_is_found(tmp_path):
    import onnx

    from cnnarena.export.int8_rewrites import flatten_channels_last, float_stem, relu_before_max_pool

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.MaxPool2d(2), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 5)).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.rand(1, 1, 16, 16),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    model = onnx.load(str(path))
    stem = float_stem(model)
    assert [n.op_type for n in model.graph.node if n.name in stem] == ["Conv", "MaxPool", "Relu"]
    assert relu_before_max_pool(model, keep=frozenset(stem)) == 0  # the stem's pair keeps its order
    assert flatten_channels_last(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops[ops.index("Flatten") - 1] == "Transpose"
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).normal(size=(3, 1, 16, 16)).astype(np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    # a Gemm that reads its weights untransposed (transB=0), built by hand: torch's Linear always exports transB=1
    from onnx import TensorProto, helper, numpy_helper

    b = np.random.default_rng(1).normal(size=(3 * 2 * 2, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Flatten", ["r"], ["flat"]),
         helper.make_node("Gemm", ["flat", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], [numpy_helper.from_array(b, "b")])
    plain = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(plain)
    assert flatten_channels_last(rewritten) == 1
    pixels = onnx.ModelProto()  # dense layers straight on the image: no convolution's layout to meet, left alone
    pixels.CopyFrom(plain)
    pixels.graph.node.remove(pixels.graph.node[0])
    pixels.graph.node[0].input[0] = "x"
    assert flatten_channels_last(pixels) == 0
    x = np.random.default_rng(2).normal(size=(4, 3, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0],
                               ort.InferenceSession(plain.SerializeToString()).run(None, {"x": x})[0], rtol=1e-5)
    wide = torch.nn.Sequential(torch.nn.Conv2d(16, 4, 3)).eval()
    torch.onnx.export(wide, (torch.rand(1, 16, 8, 8),), str(path), dynamo=False)
    assert float_stem(onnx.load(str(path))) == []  # 16 channels: not an image's


def test_same_padding_is_a_constant_in_the_export():
    from timm.layers.conv2d_same import Conv2dSame, Conv2dSameExport

    from cnnarena.export.static_padding import with_static_padding

    net = torch.nn.Sequential(Conv2dSame(3, 4, 5, stride=2), torch.nn.ReLU(), Conv2dSame(4, 4, 3, stride=2)).eval()
    x = torch.rand(2, 3, 13, 13)
    fixed = with_static_padding(net, x)
    assert all(type(m) is Conv2dSame for m in net if isinstance(m, torch.nn.Conv2d))  # the caller's model as it was
    assert all(type(m) is Conv2dSameExport and m.pad is not None for m in fixed if isinstance(m, torch.nn.Conv2d))
    with torch.inference_mode():
        torch.testing.assert_close(fixed(x), net(x), rtol=0, atol=0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    assert with_static_padding(plain, x) is plain


def test_a_batch_takes_the_thread_count_measured_at_the_nearest_batch_size():
    measured = {"1": 1, "64": 0}  # one thread at batch 1, ONNX Runtime's default at 64
    assert [threads_for_batch(n, measured) for n in (1, 2, 8, 9, 32, 64, 512)] == [1, 1, 1, 0, 0, 0, 0]
    assert threads_for_batch(3, {"1": 1}) == 1


def test_the_classifier_writes_float_logits_within_half_an_output_step_of_the_dequantized_ones(tmp_path):
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from cnnarena.export.int8_rewrites import float_logits
    from cnnarena.export.quantize import _quantize_as

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    path = tmp_path / "net.onnx"
    torch.onnx.export(net.eval(), (torch.rand(1, 1, 8, 8),), str(path), dynamo=False, input_names=["images"],
                      output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    rng = np.random.default_rng(0)
    batches = [rng.random((16, 1, 8, 8), dtype=np.float32) for _ in range(4)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"images": x}

    plain = tmp_path / "plain.int8.onnx"  # ONNX Runtime's quantizer alone: the last QGemm rounds, a DQ expands
    quantize_static(str(path), str(plain), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    before = onnx.load(str(plain))
    after = onnx.ModelProto()
    after.CopyFrom(before)
    assert before.graph.node[-1].op_type == "DequantizeLinear" and float_logits(after) == 1
    assert after.graph.node[-1].op_type == "QGemm" and len(after.graph.node[-1].input) == 7
    assert len(after.graph.node) == len(before.graph.node) - 1
    assert {"logits_scale", "logits_zero_point"}.isdisjoint(w.name for w in after.graph.initializer)
    found = {w.name: onnx.numpy_helper.to_array(w) for w in before.graph.initializer}
    step, zero = float(found["logits_scale"]), int(found["logits_zero_point"])
    x = rng.random((64, 1, 8, 8), dtype=np.float32) * np.array([1, 3], np.float32).repeat(32)[:, None, None, None]
    rounded = ort.InferenceSession(str(plain)).run(["logits"], {"images": x})[0]  # half the images brighter than any
    # calibration image: some of their logits fall beyond the calibrated range, where uint8 clips
    exact = ort.InferenceSession(after.SerializeToString()).run(["logits"], {"images": x})[0]
    low, high = -zero * step, (255 - zero) * step  # the 256 levels' ends: beyond the calibrated range uint8 clips
    inside = (rounded > low + step / 2) & (rounded < high - step / 2)
    assert exact.dtype == np.float32 and np.abs(exact - rounded)[inside].max() <= step / 2 + 1e-5
    clipped_high, clipped_low = ~inside & (rounded > 0), ~inside & (rounded < 0)
    assert (exact[clipped_high] >= high - step / 2).all() and (exact[clipped_low] <= low + step / 2).all()
    assert (exact > high + step).any() or (exact < low - step).any()  # the float logits are not clipped
    assert np.abs(exact - rounded).max() > 0  # the float logits are not on the 256-level grid
    rewritten = tmp_path / "rewritten.int8.onnx"  # and cnnarena's quantization applies it
    _quantize_as(path, rewritten, batches, QuantFormat.QOperator, [])
    assert [n.op_type for n in onnx.load(str(rewritten)).graph.node][-1] == "QGemm"
