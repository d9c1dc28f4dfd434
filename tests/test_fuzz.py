"""Property-based tests (hypothesis) of every parser a user feeds: each input ends in a valid result or one clear
UserError (a 4xx for the server), never another exception, within a time bound.

The suite runs a fixed, derandomised example budget (profile "ci"); `make fuzz` runs the "fuzz" profile's many more.
"""

import io
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnarena.config import build_config, check_types
from cnnarena.data.cifar import unpickle
from cnnarena.data.class_map import _validate as validate_class_map
from cnnarena.data.csv_table import list_csv
from cnnarena.data.idx import read_idx
from cnnarena.data.imageio import decode_image
from cnnarena.documents import parse_document
from cnnarena.errors import UserError
from cnnarena.models.custom import build_layers

settings.register_profile("ci", max_examples=40, derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz", max_examples=1500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("CNNARENA_FUZZ_PROFILE", "ci"))

SECONDS = 5.0  # each example's bound

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=30))
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                         st.dictionaries(st.text(max_size=12), inner, max_size=6)),
                         max_leaves=30)


def _bounded(fn, *args):
    t0 = time.perf_counter()
    try:
        return fn(*args)
    except UserError as e:
        assert str(e) and "\n" not in str(e).strip() and len(str(e)) < 2000
    finally:
        assert time.perf_counter() - t0 < SECONDS


@given(text=st.text(max_size=400))
def test_yaml_text(text):
    _bounded(parse_document, text, "fuzz.yaml")


@given(text=documents.map(lambda d: yaml.safe_dump(d)))
def test_yaml_documents_round_trip_or_fail_clearly(text):
    _bounded(parse_document, text, "fuzz.yaml")


LAYER_NAMES = ["conv", "maxpool", "avgpool", "batchnorm", "relu", "dropout", "flatten", "gap", "dense", "bogus"]
layer_args = st.dictionaries(st.sampled_from(["filters", "kernel", "stride", "padding", "size", "units", "rate",
                                              "bias", "spatial", "junk"]), scalars | st.integers(0, 64), max_size=4)
layers = st.one_of(st.sampled_from(LAYER_NAMES), st.dictionaries(st.sampled_from(LAYER_NAMES), layer_args,
                                                                 min_size=1, max_size=1), documents)


@given(spec=st.one_of(st.lists(layers, max_size=6), documents))
def test_layer_specs(spec):
    _bounded(build_layers, spec, (1, 28, 28), 10)


RUN_KEYS = ["epochs", "lr", "batch_size", "model", "augment", "unfreeze", "head_hidden", "class_weights", "budget",
            "max_memory", "schedule", "fraction", "train", "input_size", "nonsense"]


@given(values=st.dictionaries(st.sampled_from(RUN_KEYS), documents, max_size=5))
def test_run_configs(values):
    def build(v):
        return build_config(check_types(v, "config file fuzz.yaml"), {"data": "digits"})

    _bounded(build, values)


@given(data=documents)
def test_class_maps(data):
    _bounded(validate_class_map, data, Path("map.yaml"))


@given(rows=st.lists(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12), max_size=4),
                max_size=6))
def test_csv_tables(rows, tmp_path_factory):
    import csv

    path = tmp_path_factory.mktemp("csv") / "labels.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    _bounded(list_csv, path)


@given(data=st.one_of(st.binary(max_size=300),
                 documents.map(lambda d: pickle.dumps(d, protocol=2)),
                 st.binary(max_size=200).map(lambda b: pickle.dumps({b"data": np.frombuffer(b, np.uint8),
                                                                     b"labels": [1]}, protocol=2))))
def test_cifar_batches(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "data_batch_1"
    path.write_bytes(data)
    _bounded(unpickle, path)


@given(data=st.one_of(st.binary(max_size=200),
                 st.tuples(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x42]), st.integers(0, 4),
                           st.lists(st.integers(0, 2**31), max_size=4), st.binary(max_size=100)).map(
                     lambda t: bytes([0, 0, t[0], t[1]]) + b"".join(d.to_bytes(4, "big") for d in t[2]) + t[3])))
def test_idx_files(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("idx") / "train-images-idx3-ubyte"
    path.write_bytes(data)
    _bounded(read_idx, path)


def _png(w, h, mode):
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG")
    return buf.getvalue()


image_bytes = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from(["L", "RGB", "RGBA", "P", "I;16", "1"])).map(
        lambda t: _png(*t)),
    st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(0, 60)).map(
        lambda t: _png(t[0], t[1], "RGB")[:t[2]]))  # truncated files


@given(data=image_bytes)
def test_image_files(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "x.png"
    path.write_bytes(data)
    t0 = time.perf_counter()
    try:
        pixels, size, _ = decode_image(str(path), 16, False)
        assert pixels.shape[-2:] == (16, 16)
    except Exception as e:  # the folder loader records these as skipped files with their reason
        from cnnarena.data.imageio import _reason

        assert _reason(path, e)
    assert time.perf_counter() - t0 < SECONDS


@pytest.fixture(scope="module")
def client(digits_run):
    from fastapi.testclient import TestClient

    from cnnarena.serve.app import create_app

    with TestClient(create_app(digits_run, backend="torch", max_body_bytes=64 * 1024)) as c:
        yield c


@given(data=image_bytes,
       content_type=st.sampled_from(["image/png", "application/octet-stream", "text/plain"]),
       field=st.sampled_from(["file", "files", "image", ""]))
def test_server_uploads(data, content_type, field, client):
    response = client.post("/v1/predict", files={field or "x": ("a.png", data, content_type)})
    assert response.status_code in (200, 400, 413, 415, 422), response.text
    assert "error" in response.json() if response.status_code != 200 else response.json()["results"]


@given(body=st.binary(max_size=500),
       content_type=st.sampled_from(["multipart/form-data; boundary=xyz", "multipart/form-data",
                                                  "application/json", "image/png", ""]))
def test_server_raw_bodies(body, content_type, client):
    response = client.post("/v1/predict", content=body, headers={"content-type": content_type} if content_type
                           else {})
    assert 400 <= response.status_code < 500 or response.status_code == 200, response.text
