"""The doctor's label issues from a pretrained backbone's features (the default for colour images, up to 10,000), the
pixel model otherwise, the report saying which, and the features computed once per dataset."""

from __future__ import annotations

import subprocess
import sys

import dirty_data
import numpy as np
import pytest
import torch

from cnnarena.data.doctor import AUTO_BACKBONE_IMAGES, examine, label_model_choice
from cnnarena.data.feature_cache import cached_features
from cnnarena.data.sources import load_source
from cnnarena.models import embeddings


@pytest.fixture(scope="module")
def dirty(tmp_path_factory) -> dirty_data.DirtyFolder:
    return dirty_data.build(tmp_path_factory.mktemp("dirty") / "digits-photos", "digits")


@pytest.mark.slow  # the backbone over a few hundred images
def test_the_backbone_names_the_flipped_labels_and_the_report_says_it_was_used(dirty):
    source = load_source(str(dirty.root), image_size=64)
    report = examine(source, root=source.root, near=False, embed=embeddings.backbone_embeddings,
                     embed_name=embeddings.describe(), label_model="backbone")
    assert "EfficientNet-Lite0" in report["label_issues_model"]
    listed = [issue["id"] for issue in report["label_issues"]]
    moved_copies = {copy for original, copy in dirty.exact if original.split("/")[0] != copy.split("/")[0]}
    assert sum(i in listed for i in dirty.flipped) >= 0.5 * len(dirty.flipped), listed
    assert sum(i in set(dirty.flipped) | moved_copies for i in listed) >= 0.5 * len(listed), listed
    auto = examine(source, root=source.root, near=False, embed=embeddings.backbone_embeddings,
                   embed_name=embeddings.describe())  # grayscale digits: auto keeps the pixel model, and says why
    assert "16x16 pixels (grayscale images" in auto["label_issues_model"]


def test_auto_takes_the_backbone_up_to_its_limit_and_pixels_without_one():
    def embed(images):
        return np.zeros((len(images), 4))

    assert label_model_choice("auto", AUTO_BACKBONE_IMAGES, embed, colour=True) == "backbone"
    assert label_model_choice("auto", AUTO_BACKBONE_IMAGES + 1, embed, colour=True) == "pixels"
    assert label_model_choice("auto", 10, embed, colour=False) == "pixels"  # grayscale: pixels did as well
    assert label_model_choice("auto", 10, None, colour=True) == "pixels"
    assert label_model_choice("backbone", 10**6, embed, colour=False) == "backbone"


def test_features_are_computed_once_for_the_same_pixels(tmp_path):
    calls = []

    def compute(images: torch.Tensor) -> np.ndarray:
        calls.append(len(images))
        return images.flatten(1).float().numpy()[:, :3]

    images = torch.randint(0, 255, (5, 1, 8, 8), dtype=torch.uint8)
    first = cached_features(images, "test", compute, cache_dir=tmp_path)
    again = cached_features(images, "test", compute, cache_dir=tmp_path)
    assert calls == [5] and np.array_equal(first, again)
    images[0, 0, 0, 0] ^= 1  # one pixel changed: new features
    cached_features(images, "test", compute, cache_dir=tmp_path)
    cached_features(images, "other name", compute, cache_dir=tmp_path)
    assert calls == [5, 5, 5]
    for entry in (tmp_path / "features").rglob("*.npy"):  # an unreadable entry is computed again, not a crash
        entry.write_bytes(b"garbage")
    cached_features(images, "test", compute, cache_dir=tmp_path)
    assert calls == [5, 5, 5, 5]


def test_an_unknown_label_model_is_one_line():
    done = subprocess.run([sys.executable, "-m", "cnnarena.cli", "doctor", "digits", "--label-model", "resnet"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown --label-model 'resnet'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_clean_class_names_no_outlier_and_a_stray_is_named():
    from cnnarena.data.outliers import unlike_their_class

    rng = np.random.default_rng(0)
    centre = rng.normal(size=64)
    clean = centre + 0.3 * rng.normal(size=(200, 64))
    labels = np.zeros(201, dtype=int)
    assert unlike_their_class(clean, labels[:200]) == []
    stray = rng.normal(size=(1, 64))
    named = unlike_their_class(np.vstack([clean, stray]), labels)
    assert [i for i, _, _ in named] == [200]


@pytest.mark.slow  # the backbone over a few hundred images
def test_photos_of_something_else_filed_in_a_class_are_named_unusual(tmp_path):
    """Colour photos of digits 3 and 8 (real handwriting, tinted), with 4 Fashion-MNIST garments filed under 8."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from cnnarena.data.sources import load_source as load

    digits = load_digits()
    rng = np.random.default_rng(0)

    def tinted(gray: np.ndarray, name: str, folder: str) -> None:
        ink = np.asarray(Image.fromarray(gray).resize((48, 48), Image.BICUBIC))[..., None] / 255.0
        ground = rng.uniform(170, 255, 3)
        (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray((ink * np.array([200, 40, 40]) + (1 - ink) * ground).astype(np.uint8)).save(
            tmp_path / "data" / folder / name)

    for label in (3, 8):
        for k in np.flatnonzero(digits.target == label)[:120]:
            tinted((digits.images[k] * 255 / 16).astype(np.uint8), f"{k:04d}.png", f"d{label}")
    garments = load("fashion-mnist").pool.images[:4, 0].numpy()
    for k, garment in enumerate(garments):
        tinted(garment, f"stray-{k}.png", "d8")
    source = load(str(tmp_path / "data"), image_size=48)
    report = examine(source, root=source.root, near=False, embed=embeddings.backbone_embeddings,
                     embed_name=embeddings.describe())  # colour: auto takes the backbone
    assert "EfficientNet-Lite0" in report["label_issues_model"]
    named = [row["id"] for row in report["outliers"]]
    assert sum("stray" in i for i in named) >= 3, named
    assert sum("stray" not in i for i in named) <= 0.05 * 240, named


def test_a_second_doctor_reads_its_near_duplicate_pairs_from_the_cache(tmp_path):
    import json

    from cnnarena.data.duplicate_cache import cached_near_pairs

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (6, 3, 32, 32), dtype=np.uint8))
    images[1] = images[0]  # an exact copy: excluded from the near pairs
    first, capped = cached_near_pairs(images, {(0, 1)}, 0.99, cache_dir=tmp_path)
    entry = next((tmp_path / "duplicates").glob("*-pairs-0.99.json"))
    entry.write_text(json.dumps({"pairs": [[2, 3, 0.995]], "capped": False}))  # what the cache says is used
    again, _ = cached_near_pairs(images, {(0, 1)}, 0.99, cache_dir=tmp_path)
    assert [(p.a, p.b, p.similarity) for p in again] == [(2, 3, 0.995)]
    other, _ = cached_near_pairs(images, {(0, 1)}, 0.95, cache_dir=tmp_path)  # another threshold: searched
    assert [(p.a, p.b) for p in other] == [(p.a, p.b) for p in first] and not capped
    entry.write_text("{")  # unreadable: searched again
    assert [(p.a, p.b) for p in cached_near_pairs(images, {(0, 1)}, 0.99, cache_dir=tmp_path)[0]] == \
        [(p.a, p.b) for p in first]


@pytest.mark.slow  # three k-fold fits
def test_the_label_issues_probabilities_are_computed_once_for_the_same_pixels_and_labels(tmp_path, monkeypatch):
    """A second doctor reuses the k-fold models' out-of-sample probabilities; a changed label refits them."""
    from sklearn.datasets import load_digits

    from cnnarena.data import label_issues

    monkeypatch.setenv("CNNARENA_CACHE", str(tmp_path))
    fits = []
    fit = label_issues.out_of_sample_probabilities
    monkeypatch.setattr(label_issues, "out_of_sample_probabilities", lambda *a: fits.append(1) or fit(*a))
    digits = load_digits()
    images = torch.from_numpy((digits.images[:300] * 255 / 16).astype(np.uint8))[:, None]
    labels = digits.target[:300].copy()
    labels[:6] = (labels[:6] + 1) % 10
    first, _ = label_issues.find_label_issues(images, labels)
    again, _ = label_issues.find_label_issues(images, labels)
    assert len(fits) == 1 and first == again and {i.index for i in first} & set(range(6))
    labels[10] = (labels[10] + 1) % 10
    label_issues.find_label_issues(images, labels)
    assert len(fits) == 2

