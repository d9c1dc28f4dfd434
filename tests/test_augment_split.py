"""Batch augmentation ops and stratified, reusable splits."""

import json

import pytest
import torch

from cnnarena.data.augment import AugmentConfig, BatchAugment, parse_augment, translate
from cnnarena.data.digits import load_digits_source
from cnnarena.data.loader import BatchLoader
from cnnarena.data.split import load_manifest, make_split, subsample, write_manifest
from cnnarena.errors import UserError


def test_flip_mirrors_about_half_the_batch():
    x = torch.rand(400, 3, 8, 8)
    out = BatchAugment(AugmentConfig(flip=True))(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (flipped | same).all()
    assert 150 < flipped.sum() < 250


def test_translate_shifts_content_within_bounds():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0  # one bright pixel in the middle
    out = translate(x, 3, torch.Generator().manual_seed(1))
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 16, pos % 16
    assert ((rows - 8).abs() <= 3).all() and ((cols - 8).abs() <= 3).all()
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10  # really random per sample


def test_erase_blanks_one_rectangle_of_2_to_33_percent_in_about_half_the_images():
    x = torch.rand(400, 1, 28, 28) * 0.9 + 0.1  # no pixel is 0 before
    out = BatchAugment(parse_augment("erase=0.5"))(x, torch.Generator().manual_seed(0))
    blank = out == 0
    erased = blank.flatten(1).any(1)
    assert 150 < erased.sum() < 250
    for image in blank[erased][:, 0]:
        rows, cols = image.any(1).nonzero().flatten(), image.any(0).nonzero().flatten()
        box = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and image.sum() == box.numel()  # one solid rectangle
        assert 0.01 <= image.float().mean() <= 0.34
    assert torch.equal(out[~erased], x[~erased])
    assert len({tuple(b.nonzero()[0].tolist()) for b in blank[erased][:, 0]}) > 50  # drawn per image
    again = BatchAugment(parse_augment("erase=0.5"))(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_affine_and_colour_keep_shape_and_range():
    aug = BatchAugment(parse_augment("strong"))
    x = torch.rand(16, 3, 32, 32)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)


def test_parse_augment_forms():
    assert parse_augment("flip,translate=2,rotation=10") == AugmentConfig(flip=True, translate=2, rotation=10.0)
    assert parse_augment({"zoom": 0.1}).zoom == 0.1
    with pytest.raises(UserError, match="unknown augmentation"):
        parse_augment("flip,sparkle=1")
    with pytest.raises(UserError, match="needs a number"):
        parse_augment("rotation=lots")
    assert parse_augment("flip,erase=0.5").erase == 0.5
    with pytest.raises(UserError, match="erase must be a number from 0 to 1"):
        parse_augment("erase=2")


def test_loader_batches_cover_the_data_once_per_epoch():
    data = load_digits_source().pool
    loader = BatchLoader(data, 100, shuffle=True, seed=3)
    seen = torch.cat([y for _, y in loader])
    assert len(seen) == len(data)
    assert torch.equal(seen.sort().values, data.labels.sort().values)
    x, _ = next(iter(loader))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_split_is_stratified_60_20_20_and_seeded():
    source = load_digits_source()
    split = make_split(source, seed=0)
    n = len(source.pool)
    assert abs(len(split.train) - 0.6 * n) <= 10 and abs(len(split.test) - 0.2 * n) <= 10
    shares = [torch.bincount(s.labels, minlength=10).float() / len(s) for s in (split.train, split.val, split.test)]
    assert (shares[0] - shares[2]).abs().max() < 0.02
    ids = set(split.train.ids) | set(split.val.ids) | set(split.test.ids)
    assert len(ids) == n  # disjoint and complete
    assert make_split(source, seed=0).test.ids == split.test.ids
    assert make_split(source, seed=1).test.ids != split.test.ids


def test_manifest_round_trip_and_mismatch(tmp_path):
    source = load_digits_source()
    split = make_split(source, seed=5)
    path = tmp_path / "split.json"
    write_manifest(split, path, source_name="digits", seed=5)
    again = load_manifest(path, source)
    assert again.val.ids == split.val.ids and torch.equal(again.test.images, split.test.images)
    manifest = json.loads(path.read_text())
    manifest["test"].append("digits/999999")
    path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="not in this dataset"):
        load_manifest(path, source)
    with pytest.raises(UserError, match="not found"):
        load_manifest(tmp_path / "nope.json", source)


def test_subsample_keeps_class_balance():
    data = load_digits_source().pool
    small = subsample(data, 0.25, seed=0)
    assert abs(len(small) - 0.25 * len(data)) <= 10
    assert min(small.class_counts()) >= 40
