"""Hugging Face datasets as DATA, built here from real digit images (no network): a save_to_disk folder with its
three splits, a folder of Parquet files, hf:PATH, hf:NAME from the datasets cache a hub download leaves, columns found
from the features or named, decoded once."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from cli_run import run_cli
from PIL import Image

from cnnarena.data import hf
from cnnarena.data.imageio import PARALLEL_MIN_FILES
from cnnarena.data.sources import load_source
from cnnarena.errors import UserError

NAMES = [f"digit-{d}" for d in range(10)]


def digit_images(n, start=0):
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = (d.images[start:start + n] * (255 / 16)).astype(np.uint8)
    return [Image.fromarray(p, "L").resize((16, 16)) for p in pixels], d.target[start:start + n].tolist()


def dataset(n, start, image="image", label="label", names=True):
    images, labels = digit_images(n, start)
    features = datasets.Features({image: datasets.Image(),
                                  label: datasets.ClassLabel(names=NAMES) if names else datasets.Value("string"),
                                  "note": datasets.Value("int64")})
    values = labels if names else [NAMES[v] for v in labels]
    return datasets.Dataset.from_dict({image: images, label: values, "note": list(range(n))}, features=features)


@pytest.fixture(scope="module")
def three_splits(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "digits-hf"
    datasets.DatasetDict({"train": dataset(600, 0), "validation": dataset(200, 600),
                          "test": dataset(300, 800)}).save_to_disk(str(path))
    return path


def test_a_save_to_disk_folder_keeps_its_splits_and_class_names(three_splits, tmp_path, monkeypatch):
    source = load_source(str(three_splits), cache_dir=tmp_path / "cache")
    assert source.classes == NAMES  # the ClassLabel's names, in its order
    assert (len(source.pool), len(source.val), len(source.test)) == (600, 200, 300)
    assert source.pool.channels == 1 and source.pool.size == (64, 64)  # gray images stay one channel, as folders
    assert source.test.ids[:2] == ["test/0", "test/1"]
    _, expected = digit_images(300, 800)
    assert source.test.labels.tolist() == expected
    # decoded once: a second load reads the cache and decodes nothing
    monkeypatch.setattr(hf, "decode_into_cache", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = load_source(str(three_splits), cache_dir=tmp_path / "cache")
    assert again.pool.images.equal(source.pool.images)


def test_a_run_on_a_hugging_face_dataset_uses_its_validation_and_test_splits(three_splits, tmp_path, monkeypatch,
                                                                               capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(["train", f"hf:{three_splits}", "--model", "simple-2conv", "--epochs", "2",
                              "--image-size", "16", "--out", str(run)], monkeypatch, capsys)
    assert code == 0, err
    split = json.loads((run / "split.json").read_text())
    assert split["sizes"] == {"train": 600, "val": 200, "test": 300}
    assert split["val"][0] == "validation/0" and split["test"][0] == "test/0"
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] > 0.5
    code, out, err = run_cli(["evaluate", str(run)], monkeypatch, capsys)  # the run's data loads again
    assert code == 0, err


def test_a_parquet_folder_with_named_columns(tmp_path):
    folder = tmp_path / "parquet"
    folder.mkdir()
    dataset(400, 0, image="img", label="kind", names=False).to_parquet(str(folder / "train.parquet"))
    dataset(150, 400, image="img", label="kind", names=False).to_parquet(str(folder / "test.parquet"))
    source = load_source(str(folder), label_column="kind", image_size=16, cache_dir=tmp_path / "cache")
    assert source.classes == sorted(NAMES) and len(source.pool) == 400 and len(source.test) == 150
    assert source.val is None  # carved from train by the run's split
    _, labels = digit_images(150, 400)
    assert [source.classes[i] for i in source.test.labels.tolist()] == [NAMES[v] for v in labels]


def test_wrong_columns_and_missing_datasets_are_one_line(three_splits, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "parquet"
    folder.mkdir()
    dataset(100, 0, label="kind", names=False).to_parquet(str(folder / "train.parquet"))
    code, _, err = run_cli(["train", str(folder), "--out", str(tmp_path / "r1")], monkeypatch, capsys)
    assert code == 2 and "no label column (a ClassLabel feature, or one named label) among image, kind, note" in err
    code, _, err = run_cli(["train", str(three_splits), "--image-column", "picture", "--out", str(tmp_path / "r2")],
                           monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (
        "error: no image column 'picture': the dataset has image, label, note")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here anyway: the hub's answer must be one line
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # datasets read the variable at import
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    code, _, err = run_cli(["train", "hf:nobody/no-such-dataset", "--out", str(tmp_path / "r3")], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: cannot load Hugging Face dataset 'nobody/no-such-dataset'")


def hub_download_cache(home, name, splits):
    """The datasets cache an online `load_dataset(name)` of a Parquet-only hub repository leaves under HF_HOME: the
    Parquet builder that load uses, prepared by datasets itself (config "default", a commit hash as the hub's),
    from local files instead of the hub's."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = home / "downloaded"
    files.mkdir(parents=True)
    for split, ds in splits.items():
        ds.to_parquet(str(files / f"{split}.parquet"))
    builder = Parquet(cache_dir=str(home / "datasets"), dataset_name=name, config_id="default",
                      hash="5f0c3a1e9b7d2c4a6e8f0b1d3c5a7e9f1b3d5c7a",
                      data_files={split: str(files / f"{split}.parquet") for split in splits})
    builder.download_and_prepare()
    return Path(builder.cache_dir)


def test_a_hub_dataset_name_loads_offline_from_the_local_cache(tmp_path, monkeypatch, capsys):
    home = tmp_path / "hf-home"
    prepared = hub_download_cache(home, "digits", {"train": dataset(500, 0), "test": dataset(200, 500)})
    assert prepared.is_relative_to(home / "datasets" / "digits" / "default")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # datasets reads both at import
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    source = load_source("hf:digits", image_size=16, cache_dir=tmp_path / "cache")
    assert source.classes == NAMES and (len(source.pool), len(source.test)) == (500, 200)
    assert source.val is None  # no validation split: the run carves one from train
    _, expected = digit_images(200, 500)
    assert source.test.labels.tolist() == expected
    assert load_source("hf:digits:default", image_size=16, cache_dir=tmp_path / "cache").test.ids == source.test.ids
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "hf:digits", "--model", "simple-2conv", "--epochs", "1", "--image-size", "16",
                              "--out", str(run)], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((run / "split.json").read_text())["sizes"]["test"] == 200
    code, _, err = run_cli(["train", "hf:digits:no-such-config", "--out", str(tmp_path / "r2")], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith(
        "error: cannot load Hugging Face dataset 'digits' (no-such-config)")


def test_a_split_decodes_in_worker_processes_and_skips_what_does_not_decode_as_folders_do(tmp_path):
    import io

    from cnnarena.data.imageio import decode_image

    images, labels = digit_images(PARALLEL_MIN_FILES + 100)  # enough rows for worker processes
    encoded = []
    for img in images:
        out = io.BytesIO()
        img.save(out, format="PNG")
        encoded.append({"bytes": out.getvalue(), "path": None})
    encoded[3] = {"bytes": encoded[3]["bytes"][:len(encoded[3]["bytes"]) // 2], "path": None}  # cut short
    encoded[7] = {"bytes": b"", "path": None}
    encoded[11] = None
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    train = datasets.Dataset.from_dict({"image": encoded, "label": labels}, features=features)
    colour = [Image.merge("RGB", (img, img.point(lambda v: 255 - v), img)) for img in images[:60]]
    test = datasets.Dataset.from_dict({"image": colour, "label": labels[:60]}, features=features)
    path = tmp_path / "with-bad-rows"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(path))
    source = load_source(str(path), image_size=16, cache_dir=tmp_path / "cache")
    assert dict(source.skipped) == {"train/3": "truncated", "train/7": "empty file", "train/11": "no image"}
    kept = [i for i in range(len(images)) if i not in (3, 7, 11)]
    assert source.pool.ids == [f"train/{i}" for i in kept]
    assert source.pool.labels.tolist() == [labels[i] for i in kept]
    # a gray train split beside a colour test split: RGB, gray copied into each channel
    assert source.pool.channels == 3 and source.test.channels == 3
    for row, i in ((0, 0), (150, kept[150]), (len(kept) - 1, kept[-1])):
        pixels, _, _ = decode_image(io.BytesIO(encoded[i]["bytes"]), 16, False)
        assert all(source.pool.images[row, c].numpy().tolist() == pixels.tolist() for c in range(3))
    red, green = source.test.images[5, 0].tolist(), source.test.images[5, 1].tolist()
    assert green == [[255 - v for v in r] for r in red]

    with pytest.raises(UserError, match=r"^3 unreadable images in .*with-bad-rows \(--strict\): train/3 \(truncated\)"):
        load_source(str(path), image_size=16, cache_dir=tmp_path / "cache", strict=True)
    gray = load_source(str(path), image_size=16, grayscale=True, cache_dir=tmp_path / "cache")
    assert gray.pool.channels == 1 and gray.test.channels == 1 and len(gray.pool) == len(kept)


def test_a_shuffled_split_keeps_each_image_with_its_label(tmp_path):
    images, labels = digit_images(PARALLEL_MIN_FILES + 50)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES),
                                  "row": datasets.Value("int64")})
    whole = datasets.Dataset.from_dict({"image": images, "label": labels, "row": list(range(len(images)))},
                                       features=features)
    shuffled = whole.shuffle(seed=3)  # rows read through an indices mapping
    assert shuffled._indices is not None
    pixels, meta = hf._decode_split(shuffled, "image", "label", 16, None, tmp_path / "cache", "train", "shuffled")
    rows = shuffled["row"][:]
    assert meta["labels"] == [labels[r] for r in rows] and pixels.shape == (len(rows), 1, 16, 16)
    for k in (0, 77, len(rows) - 1):
        want = np.asarray(images[rows[k]].resize((16, 16), Image.Resampling.LANCZOS, reducing_gap=3.0))
        assert pixels[k, 0].tolist() == want.tolist()


def test_rows_without_a_label_are_left_out_not_made_a_class(tmp_path):
    images, labels = digit_images(300)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    train = datasets.Dataset.from_dict({"image": images[:200], "label": labels[:190] + [-1] * 10}, features=features)
    test = datasets.Dataset.from_dict({"image": images[200:], "label": [-1] * 100}, features=features)  # unlabeled
    path = tmp_path / "competition"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(path))
    source = load_source(str(path), cache_dir=tmp_path / "cache")
    assert "-1" not in source.classes and source.classes == sorted(set(source.classes), key=NAMES.index)
    assert len(source.pool) == 190 and source.test is None  # the unlabeled test split: left out, not a class


@pytest.mark.parametrize("argv, message", [
    (["--label-column", "image"], "--label-column 'image' is the image column"),
    (["--image-column", "note"], "column 'note' holds Value values, not images"),
    (["--image-column", "label"], "column 'label' holds ClassLabel values, not images"),
])
def test_columns_of_the_wrong_kind_are_one_line(argv, message, three_splits, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(["train", str(three_splits), *argv, "--out", str(tmp_path / "run")], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "run").exists()
