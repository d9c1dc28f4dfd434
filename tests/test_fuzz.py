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


# --- reports and split files: hostile names stay text --------------------------------------------------------------

NAMES = st.lists(st.sampled_from([*"<>&\"'`|*_[]#/\n =;:aZ0", "<script>", "</title>", "onerror=", "javascript:"]),
                 min_size=1, max_size=12).map("".join)
REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "section", "ul", "li", "code",
               "div", "table", "tr", "th", "td", "span", "img", "caption", "b"}


def _tags(html: str) -> set[str]:
    from html.parser import HTMLParser

    found = set()

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.add(tag)
            assert not any(name.startswith("on") for name, _ in attrs), attrs  # no event handler from a name

    Tags().feed(html)
    return found


@given(models=st.lists(NAMES, min_size=2, max_size=3, unique=True), classes=st.lists(NAMES, min_size=2, max_size=3,
                                                                                      unique=True), data=NAMES)
def test_the_study_report_keeps_hostile_names_as_text(models, classes, data):
    from cnnarena.report.study_report import render

    table = [{"model": m, "family": "custom", "accuracy": 0.9, "accuracy_std": None, "seeds": 1, "run_dir": f"runs/{m}",
              "memory_method": "measured", "params": 10, "latency_ms": 1.0} for m in models]
    comparison = {"data": data, "table": table, "device": "cpu", "machine": data, "study_seconds": 1,
                  "answer": f"{models[0]} won on {data}", "verdict": [f"{m} line" for m in models],
                  "methods": {m: f"{m} {data}" for m in models}, "next_steps": [(data, f"cnnarena serve {models[0]}")],
                  "split_sizes": {"train": 1}, "tradeoffs": [], "mcnemar": None, "seed_spread": {},
                  "lr_comparison": {}, "fraction_winners": [],
                  "dataset": {"samples": 2, "classes": classes, "stored_size": [8, 8], "channels": 1,
                              "imbalance_ratio": 1.0, "counts": {"total": [1] * len(classes)}}}
    per_model = [{"model": m, "color": "#000000", "curves": "", "mistakes": "", "recall": {c: 0.5 for c in classes},
                  "confusion": {"classes": classes, "rows": [{"name": c, "cells": [{"count": 1, "share": 0.5}]}
                                                             for c in classes]}} for m in models]
    html = render(comparison, {"class_distribution": "", "samples": ""}, {}, None, per_model,
                  {m: "#000000" for m in models})
    assert _tags(html) <= REPORT_TAGS


@given(names=st.lists(NAMES, min_size=2, max_size=4, unique=True))
def test_doctor_markdown_rows_keep_their_cells(names):
    from cnnarena.report.doctor_report import md

    for name in names:
        cell = md(name)
        assert "\n" not in cell and "<" not in cell
        assert cell.replace("\\|", "").count("|") == 0  # every pipe escaped: the row keeps its cells


@given(doc=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                            st.sampled_from(["train", "val", "test", "classes", "x"]), inner, max_size=4),
                        max_leaves=20))
def test_split_files(doc, tmp_path_factory):
    import json

    from cnnarena.data.sources import load_source
    from cnnarena.data.split import load_manifest

    path = tmp_path_factory.mktemp("split") / "split.json"
    path.write_text(json.dumps(doc))
    try:
        load_manifest(path, load_source("digits"))
    except UserError:
        pass
