"""Numbers a user can type (issue 33, groups 5 and 6): infinite, NaN, 400 digits, negative seeds, shifts larger than
the image, a loss that blows up. Each is one error line and a non-zero exit, before anything is written where it
can be checked first; nothing in the user's folder changes."""

from __future__ import annotations

import pytest
from cli_run import run_cli

import cnnarena
from cnnarena.errors import UserError
from cnnarena.explain.cam import class_index

HUGE = "9" * 400


def _one_line(code, err):
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["train", "digits", "--budget", "inf"], "--budget expects a positive duration"),
    (["train", "digits", "--budget", HUGE], "is longer than 30 days"),
    (["train", "digits", "--max-memory", "inf"], "--max-memory expects a size"),
    (["train", "digits", "--max-memory", HUGE], "larger than any machine's memory"),
    (["train", "digits", "--lr", "inf"], "must be a finite number"),
    (["train", "digits", "--lr", "nan"], "must be a finite number"),
    (["train", "digits", "--epochs", HUGE], "400-digit number"),
    (["train", "digits", "--seed", "-1"], "--seed"),
    (["train", "digits", "--seed", HUGE], "--seed"),
    (["train", "digits", "--augment", "rotation=nan"], "augmentation rotation must be a number from 0 to 180"),
    (["train", "digits", "--augment", "zoom=inf"], "augmentation zoom must be a number from 0 to 0.9"),
    (["serve", "runs/none", "--max-body-mb", "inf"], "must be a finite number"),
    (["study", "--heartbeat", "inf"], "must be a finite number"),
    (["tune", "digits", "--heartbeat", HUGE], "must be a finite number"),
])
def test_a_number_that_cannot_be_used_is_one_line_and_nothing_is_written(argv, message, tmp_path, monkeypatch,
                                                                         capsys):
    out = tmp_path / "run"
    code, _, err = run_cli([*argv, *(["--out", str(out)] if argv[0] == "train" else [])], monkeypatch, capsys)
    assert message in _one_line(code, err)
    assert not out.exists()


def test_the_api_checks_numbers_like_the_command_line(tmp_path):
    for options, message in (({"lr": float("inf")}, "lr must be a finite number"),
                             ({"seed": -1}, "--seed must be between 0"),
                             ({"epochs": 10**400}, "401-digit number")):
        with pytest.raises(UserError, match=message):
            cnnarena.train("digits", out=tmp_path / "r", **options)
        assert not (tmp_path / "r").exists()


def test_a_shift_as_large_as_the_image_is_refused_before_the_run_directory(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "digits", "--augment", "translate=8", "--out", str(out)], monkeypatch, capsys)
    assert "translate=8 needs images larger than 8 px; these are 8 px" in _one_line(code, err)
    assert not out.exists()


def test_a_loss_that_blows_up_stops_with_the_epoch_and_a_lower_lr(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(["train", "digits", "--model", "simple-2conv", "--optimizer", "sgd", "--lr", "1e30",
                            "--epochs", "3", "--out", str(tmp_path / "run")], monkeypatch, capsys)
    lines = err.strip().splitlines()  # the run's own lines, then one error line
    assert code != 0 and "Traceback" not in err and lines[-1].startswith("error: epoch 1: the training loss is nan")
    assert "give a lower --lr (it was 5e+29)" in lines[-1]  # the learning rate it trained with, fitted to the data


def test_a_class_index_in_another_script_is_not_a_number():
    with pytest.raises(UserError, match="is not a class of this model"):
        class_index(["a", "b", "c"], "²")
    assert class_index(["a", "b", "c"], "2") == 2


def test_the_doctors_label_issue_line_is_a_whole_sentence():
    from cnnarena.data.doctor import summary_lines

    report = {"dataset": {"name": "d", "images": 10, "classes": ["a", "b"], "imbalance_ratio": 1.0,
                          "near_empty_classes": []}, "unreadable": [], "files": None,
              "duplicates": {"exact_within_class": 0, "exact_across_classes": 0, "near_within_class": 0,
                             "near_across_classes": 0, "near_search_capped": False, "leakage": None},
              "label_issues": [1, 2], "serious": []}
    line = next(x for x in summary_lines(report) if x.startswith("label issues"))
    assert line == "label issues: 2 image(s) whose out-of-sample predictions disagree with their label"
    report["label_issues_model"] = "5-fold logistic regression on pixels"
    line = next(x for x in summary_lines(report) if x.startswith("label issues"))
    assert line.endswith("disagree with their label (from 5-fold logistic regression on pixels)")


@pytest.mark.parametrize("space, message", [
    ("lr: {low: 0.1, high: 0.001}", "lr: low 0.1 is above high 0.001"),
    ("lr: {low: abc, high: 0.1}", "low and high must be finite numbers"),
    ("batch_size: {choices: 5}", "choices must be a non-empty list"),
    ("lr: {low: 0, high: 0.1, log: true}", "a log range needs low above 0"),
    ("lerning_rate: {low: 0.001, high: 0.1}", "'lerning_rate' is not an option of a run"),
])
def test_a_search_space_optuna_cannot_sample_is_one_line(space, message, tmp_path):
    from cnnarena.study.tune import load_space

    path = tmp_path / "space.yaml"
    path.write_text(space + "\n")
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        load_space(path, "simple-2conv")


def test_a_split_file_nested_200000_deep_is_not_a_split(tmp_path):
    from cnnarena.data.sources import load_source
    from cnnarena.data.split import load_manifest

    path = tmp_path / "split.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(UserError, match="is not a cnnarena split manifest"):
        load_manifest(path, load_source("digits"))
    path.write_text('{"train": [["a"]], "val": [], "test": []}')
    with pytest.raises(UserError, match="must be lists of image ids"):
        load_manifest(path, load_source("digits"))
