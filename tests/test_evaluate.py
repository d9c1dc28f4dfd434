"""`cnnarena evaluate`: which test-time augmentation and which images a re-evaluation uses."""

import json
import re

import numpy as np
import pytest
from cli_run import run_cli
from PIL import Image
from sklearn.datasets import load_digits

from cnnarena.config import build_config
from cnnarena.evaluate.reevaluate import reevaluate, same_data
from cnnarena.run import train_run


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
