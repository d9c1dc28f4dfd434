"""describe / format_description / write_plots against hand-counted datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnarena.data.dataset import ImageSet, Source
from cnnarena.data.inspect import describe, format_description, write_plots
from cnnarena.data.sources import load_source


def image_set(labels: list[int], classes: list[str], channels: int = 3, prefix: str = "x") -> ImageSet:
    gen = torch.Generator().manual_seed(len(labels))
    images = torch.randint(0, 256, (len(labels), channels, 12, 12), dtype=torch.uint8, generator=gen)
    return ImageSet(images, torch.tensor(labels), classes, [f"{prefix}/{i}" for i in range(len(labels))])


@pytest.fixture
def source() -> Source:
    """pool: 5 cat, 3 dog, 2 long-named; test: 1, 2, 1; sizes varied; two skipped files."""
    classes = ["cat", "dog", "a rather long class name"]
    pool = image_set([0] * 5 + [1] * 3 + [2] * 2, classes)
    test = image_set([0, 1, 1, 2], classes, prefix="test")
    sizes = [(100, 200)] * 7 + [(50, 40)] * 7  # (h, w)
    return Source("pets", pool, test, [("cat/bad.jpg", "truncated"), ("dog/x.png", "empty file")], sizes)


def test_describe_matches_hand_counts(source: Source) -> None:
    desc = describe(source)
    assert desc["counts"] == {"pool": [5, 3, 2], "test": [1, 2, 1], "total": [6, 5, 3]}
    assert desc["samples"] == 14 and desc["imbalance_ratio"] == 2.0
    assert desc["channels"] == 3 and desc["stored_size"] == [12, 12]
    assert desc["original_sizes"] == {"min_width": 40, "max_width": 200, "mean_width": 120.0,
                                      "min_height": 50, "max_height": 100, "mean_height": 75.0, "all_same": False}
    assert desc["skipped"] == [{"path": "cat/bad.jpg", "reason": "truncated"},
                               {"path": "dog/x.png", "reason": "empty file"}]


def test_format_description_is_a_readable_table(source: Source) -> None:
    text = format_description(describe(source))
    lines = text.splitlines()
    assert lines[0] == "pets: 14 images, 3 classes, stored as 3×12×12"
    row = next(line for line in lines if line.startswith("cat "))
    assert row.split() == ["cat", "5", "1", "6", "42.9%"]
    assert any(line.split()[-4:] == ["2", "1", "3", "21.4%"] for line in lines if line.startswith("a rather"))
    assert "imbalance ratio: 2.00" in text
    assert "original width: min 40, max 200, mean 120.0" in text
    assert "original height: min 50, max 100, mean 75.0" in text
    assert "  cat/bad.jpg (truncated)" in lines


def test_describe_builtin_without_test_split() -> None:
    desc = describe(load_source("digits"))
    assert desc["counts"]["test"] is None and desc["samples"] == 1797
    assert desc["original_sizes"]["all_same"] and desc["original_sizes"]["max_width"] == 8
    text = format_description(desc)
    assert "original size: all 8×8" in text and "test" not in text.splitlines()[2]


def test_describe_a_folder_with_skipped_files(tmp_path: Path) -> None:
    for name, n in (("big", 4), ("small", 2)):
        for i in range(n):
            Path(tmp_path / "data" / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (10 + i, 20), (i, 0, 0)).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "data" / "small" / "broken.png").write_bytes(b"")
    desc = describe(load_source(str(tmp_path / "data"), image_size=8, cache_dir=tmp_path / "cache"))
    assert desc["counts"]["pool"] == [4, 2] and desc["imbalance_ratio"] == 2.0
    assert desc["original_sizes"]["min_width"] == 10 and desc["original_sizes"]["max_width"] == 13
    assert desc["original_sizes"]["mean_height"] == 20.0
    assert desc["skipped"] == [{"path": "small/broken.png", "reason": "empty file"}]


@pytest.mark.parametrize("channels", [3, 1])
def test_write_plots_makes_real_pngs(source: Source, tmp_path: Path, channels: int) -> None:
    if channels == 1:
        source = Source("gray", image_set([0, 0, 1, 1, 1], ["a", "b"], channels=1))
    paths = write_plots(source, tmp_path / "plots")
    assert [p.name for p in paths] == ["class_distribution.png", "samples.png"]
    for path in paths:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L"))
        assert img.format == "PNG" and min(img.size) >= 200 and path.stat().st_size > 5000
        assert pixels.std() > 10  # something is drawn, not a blank canvas
    with Image.open(paths[1]) as samples:  # one row per class: taller with more classes
        assert samples.size[1] >= 100 * len(source.classes)
