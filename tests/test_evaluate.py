"""`cnnarena evaluate`: which test-time augmentation and which images a re-evaluation uses."""

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from cli_run import run_cli
from PIL import Image
from sklearn.datasets import load_digits

from cnnarena.config import build_config
from cnnarena.data.sources import load_data
from cnnarena.data.split import load_manifest
from cnnarena.errors import UserError
from cnnarena.evaluate.inference import applied_shift, predict_logits, predict_views, tta_views
from cnnarena.evaluate.metrics import compute_metrics
from cnnarena.evaluate.reevaluate import reevaluate, same_data
from cnnarena.models.artefacts import load_model
from cnnarena.models.registry import create_model
from cnnarena.run import train_run
from cnnarena.study.methods import _augmentation


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """A `fast` run (its recipe evaluates with tta) on a split that is not the default 60/20/20, seed 0."""
    run = tmp_path_factory.mktemp("evaluate") / "run"
    cfg = build_config(None, {"data": "digits", "model": "fast", "epochs": 1, "val_frac": 0.1, "test_frac": 0.1,
                              "split_seed": 3, "image_size": 8})
    assert cfg.train.tta
    train_run(cfg, run)
    return run


def saved(run, name):
    return json.loads((run / name).read_text())


def test_default_uses_the_runs_tta_and_reproduces_metrics_json(fast_run):
    trained = saved(fast_run, "metrics.json")
    again = reevaluate(fast_run)
    assert again["test_samples"] == trained["test_samples"]
    assert again["test_accuracy"] == trained["test_accuracy"]
    assert again["test_loss"] == pytest.approx(trained["test_loss"], abs=1e-5)
    assert again["tta"] is True and again["tta_from"] == "the run's config"
    assert saved(fast_run, "evaluation.json")["tta"] is True


def test_tta_and_no_tta_override_the_run_and_the_output_says_which(fast_run, monkeypatch, capsys):
    code, out, _ = run_cli(["evaluate", str(fast_run)], monkeypatch, capsys)
    assert code == 0 and "test-time augmentation on (from the run's config)" in out
    code, out, _ = run_cli(["evaluate", str(fast_run), "--no-tta"], monkeypatch, capsys)
    assert code == 0 and "test-time augmentation off (from the command line)" in out
    assert saved(fast_run, "evaluation.json")["tta"] is False
    code, out, _ = run_cli(["evaluate", str(fast_run), "--tta"], monkeypatch, capsys)
    assert code == 0 and "test-time augmentation on (from the command line)" in out
    shown = float(out.split("test accuracy ")[1].split()[0])
    assert shown == round(saved(fast_run, "metrics.json")["test_accuracy"], 4)


def test_tta_views_are_the_mirror_and_reflect_padded_shifts():
    x = torch.arange(2 * 1 * 5 * 6, dtype=torch.float32).view(2, 1, 5, 6)
    plain = list(tta_views(x))
    assert len(plain) == 2 and torch.equal(plain[0], x) and torch.equal(plain[1], x.flip(3))
    views = list(tta_views(x, shift=1))
    assert len(views) == 10 and all(v.shape == x.shape for v in views)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    assert torch.equal(views[2], padded[..., 1:6, 0:6])  # moved right: column 0 is the reflected column 1
    assert torch.equal(views[2][..., 1:], x[..., :-1]) and torch.equal(views[2][..., 0], x[..., 1])
    assert torch.equal(views[3], views[2].flip(3))
    assert torch.equal(views[8][..., :-1, :], x[..., 1:, :])  # moved up
    assert len({v.sum().item() for v in views[::2]}) == 5, "five different positions"
    assert len(list(tta_views(x, shift=5))) == 2, "a shift as large as the image is left out"
    assert (applied_shift(5, (5, 6)), applied_shift(4, (5, 6)), applied_shift(0, (5, 6))) == (0, 4, 0)
    for bad in (-1, 9):  # the API and config files are held to the bounds the command line checks
        with pytest.raises(UserError, match="--tta-shift must be between 0 and 8 pixels"):
            build_config(None, {"data": "digits", "model": "fast", "tta_shift": bad})


def test_predict_logits_averages_every_views_probabilities():
    torch.manual_seed(0)
    model = create_model("simple-2conv", num_classes=3, in_chans=1, data_size=(8, 8), classes=list("abc")).eval()
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    x = images.float() / 255
    with torch.no_grad():
        want = torch.stack([model(v).softmax(1) for v in tta_views(x, 1)]).mean(0).log()
        mirror = torch.stack([model(v).softmax(1) for v in (x, x.flip(3))]).mean(0).log()
    torch.testing.assert_close(predict_logits(model, images, batch_size=2, tta=True, shift=1), want)
    torch.testing.assert_close(predict_logits(model, images, batch_size=2, tta=True), mirror)
    torch.testing.assert_close(predict_logits(model, images, shift=1), model(x).detach(), msg="shift needs tta")


def test_a_run_tested_on_shifts_says_so_and_evaluate_reproduces_it(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    cfg = build_config(None, {"data": "digits", "model": "fast", "epochs": 1, "image_size": 8, "augment": "light",
                              "tta_shift": 1})
    trained = train_run(cfg, run)
    assert trained["tta"] is True and trained["tta_shift"] == 1
    model = load_model(run)
    test = load_manifest(run / "split.json", load_data(cfg)).test
    mirror_only = compute_metrics(predict_logits(model, test.images, tta=True), test.labels, test.classes)
    assert mirror_only["test_loss"] != pytest.approx(trained["test_loss"], abs=1e-6), "the shifts were not used"
    again = reevaluate(run)
    assert (again["test_accuracy"], again["tta_shift"]) == (trained["test_accuracy"], 1)
    assert again["test_loss"] == pytest.approx(trained["test_loss"], abs=1e-5)
    assert reevaluate(run, tta=False)["tta_shift"] == 0
    too_far = train_run(build_config(None, {"data": "digits", "model": "fast", "epochs": 1, "image_size": 8,
                                            "tta_shift": 8}), tmp_path / "far")
    assert too_far["tta_shift"] == 0, "8 px on 8x8 images is not applied, and the run does not claim it"
    code, out, _ = run_cli(["evaluate", str(run)], monkeypatch, capsys)
    assert code == 0 and "test-time augmentation on with 1-px shifts (from the run's config)" in out
    said = _augmentation(yaml.safe_load((run / "config.yaml").read_text())["train"])
    assert said.endswith("Test predictions average the image and its mirror, and both moved 1 px left, right, up "
                         "and down (10 views).") and said.startswith("Augmentation: flip, translate 2.")


def test_a_tta_run_also_records_and_prints_what_one_view_scores(fast_run, monkeypatch, capsys):
    # an exported model predicts one view: the card and the printout carry that accuracy beside the TTA one
    model = load_model(fast_run)
    cfg = build_config(None, {"data": "digits", "model": "fast", "image_size": 8})
    test = load_manifest(fast_run / "split.json", load_data(cfg)).test
    alone = compute_metrics(predict_logits(model, test.images), test.labels, test.classes)["test_accuracy"]
    logits, one_view = predict_views(model, test.images, batch_size=7, tta=True, shift=1)
    torch.testing.assert_close(logits, predict_logits(model, test.images, tta=True, shift=1))
    torch.testing.assert_close(one_view, predict_logits(model, test.images))
    assert saved(fast_run, "metrics.json")["test_accuracy_one_view"] == pytest.approx(alone, abs=1e-9)
    code, out, _ = run_cli(["evaluate", str(fast_run)], monkeypatch, capsys)
    assert code == 0 and f"one view, as an exported model predicts: {alone:.4f})" in out
    assert saved(fast_run, "evaluation.json")["test_accuracy_one_view"] == pytest.approx(alone, abs=1e-9)
    code, out, _ = run_cli(["evaluate", str(fast_run), "--no-tta"], monkeypatch, capsys)
    assert code == 0 and "one view" not in out and "test_accuracy_one_view" not in saved(fast_run, "evaluation.json")


def test_data_naming_the_runs_own_dataset_uses_its_split_test_set(fast_run):
    split = saved(fast_run, "split.json")
    assert split["sizes"]["test"] == 180  # 10 % of 1797, not the default 20 %
    again = reevaluate(fast_run, data="digits")
    assert again["test_samples"] == 180, "a split other than the run's would include images it trained on"
    assert again["test_accuracy"] == saved(fast_run, "metrics.json")["test_accuracy"]
    assert "the run's test split" in again["test_set"]


def test_another_dataset_without_a_test_split_is_evaluated_whole(fast_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNARENA_CACHE", str(tmp_path / "cache"))
    digits = load_digits()
    folder = tmp_path / "held-out-digits"
    test_ids = saved(fast_run, "split.json")["test"]
    per_class = {}
    for sid in test_ids:  # images the run never trained on, as a class-folder dataset of 5 per class
        i = int(sid.split("/")[1])
        label = str(digits.target[i])
        if per_class.get(label, 0) < 5:
            per_class[label] = per_class.get(label, 0) + 1
            (folder / label).mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255 / 16)).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / label / f"{i}.png")
    code, out, err = run_cli(["evaluate", str(fast_run), "--data", str(folder)], monkeypatch, capsys)
    assert code == 0, err
    assert "evaluated on all 50 images of held-out-digits" in out
    assert "warning" not in err
    evaluation = saved(fast_run, "evaluation.json")
    assert evaluation["test_samples"] == 50 and evaluation["evaluated_on"] == str(folder)


def test_same_data_compares_paths_not_spellings(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "digits").mkdir()
    monkeypatch.chdir(tmp_path)
    assert same_data("digits", "digits")
    assert not same_data("digits", "fashion-mnist")
    assert not same_data("./digits", "digits")  # a folder named digits is not the built-in dataset
    assert same_data("photos", str(tmp_path / "photos"))
    assert same_data("./photos/", "photos")
    assert not same_data("photos", "other")
    assert not same_data("photos", "gone")


def test_help_says_what_data_and_tta_default_to(monkeypatch, capsys):
    code, out, _ = run_cli(["evaluate", "--help"], monkeypatch, capsys)
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())
    assert code == 0
    assert "run's test split (split.json)" in text and "official test split" in text and "all of its images" in text
    assert "default: the run's own setting" in text
