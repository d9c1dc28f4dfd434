"""A study on photos runs its backbone at a photo's resolution (and on small images at the small one), every
study of other data goes to its own directory, one pointed at another's is refused, and --input-sizes draws its
chart: real trainings on folders of Fashion-MNIST images written as JPEGs."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import cnnarena
from cnnarena.errors import UserError

MODELS = ["fast", "efficientnet_lite0"]


def _folder(root: Path, sizes: tuple[int, int], per_class: int = 14) -> Path:
    """Fashion-MNIST T-shirts, trousers and sneakers as RGB JPEGs of sides drawn from `sizes`."""
    from cnnarena.data.sources import load_source

    pool = load_source("fashion-mnist").pool
    rng = np.random.default_rng(0)
    for label, name in ((0, "tshirt"), (1, "trouser"), (7, "sneaker")):
        (root / name).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(pool.labels.numpy() == label)[:per_class]):
            side = int(rng.integers(sizes[0], sizes[1] + 1))
            gray = Image.fromarray(pool.images[index, 0].numpy()).resize((side, side), Image.BICUBIC)
            Image.merge("RGB", (gray, gray, gray.point(lambda v: 255 - v // 2))).save(root / name / f"{i}.jpg")
    return root


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _backbone_metrics(study) -> dict:
    return json.loads((Path(study.runs["efficientnet_lite0"].path) / "metrics.json").read_text())


@pytest.mark.slow  # two studies of two models each
def test_photos_run_the_backbone_at_128_px_or_more_small_images_stay_small_and_studies_do_not_collide(tmp_path):
    photos = _folder(tmp_path / "photos", (256, 320))
    small = _folder(tmp_path / "small", (28, 32))
    first = cnnarena.study(small, models=["efficientnet_lite0"], epochs=1, measure_seconds=0.1)
    second = cnnarena.study(photos, models=MODELS, epochs=1, measure_seconds=0.1)
    assert first.path == Path("studies/small") and second.path == Path("studies/photos")

    on_photos = _backbone_metrics(second)
    assert on_photos["input_size"][0] >= 128 and second.comparison["resolutions"]["efficientnet_lite0"].startswith(
        "photos of")  # chosen once for all the backbone's runs
    assert "photos of" in second.methods["efficientnet_lite0"]  # the reason, in the Methods
    alone = cnnarena.train(photos, model="efficientnet_lite0", epochs=1, out=tmp_path / "alone")
    assert alone.metrics["input_size"] == [224, 224] and "photos of" in alone.metrics["input_size_reason"]
    custom = yaml.safe_load((Path(second.runs["fast"].path) / "config.yaml").read_text())
    assert custom["image_size"] is None  # the custom CNN keeps the small default size
    assert _backbone_metrics(first)["input_size"][0] <= 64  # 28-32 px images: the small-image rule
    assert second.verdict.split(":")[0] in ("Training from scratch won", "Fine-tuning a pretrained network won",
                                            "No clear winner", "A tie")
    assert first.verdict.startswith("Only efficientnet_lite0 ran")

    before = _digest(first.path)
    with pytest.raises(UserError, match="holds another study") as refused:
        cnnarena.study(photos, models=["efficientnet_lite0"], epochs=1, out=first.path)
    assert "\n" not in str(refused.value) and _digest(first.path) == before


@pytest.mark.slow  # three short budgeted trainings
def test_input_sizes_run_each_backbone_at_each_resolution_and_draw_the_chart(tmp_path):
    # 42 small photos, not digits' 1,797 images: an epoch of either size is a batch or two, so a 2 s budget holds it
    small = _folder(tmp_path / "small", (28, 32))
    study = cnnarena.study(small, models=["fast", "efficientnet_lite0"], input_sizes=[32, 48],
                           budget_per_model="2s", measure_seconds=0.1, out=tmp_path / "s")
    rows = {r["model"]: r for r in study.comparison["table"]}
    assert set(rows) == {"fast", "efficientnet_lite0@32px", "efficientnet_lite0@48px"}
    assert rows["efficientnet_lite0@32px"]["input_px"] == 32 and rows["efficientnet_lite0@48px"]["input_px"] == 48
    html = study.report_path.read_text()
    assert 'id="input-sizes-chart"' in html and (study.path / "plots" / "input_sizes.png").stat().st_size > 10_000
