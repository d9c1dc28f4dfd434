"""The split, the test scores and the digits, computed without scikit-learn, are scikit-learn's own to the index and
to the last digit; and a run never imports scikit-learn (its import costs ~2 s of every run's start-up)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import classification_report, confusion_matrix
from sklearn.model_selection import train_test_split

from cnnarena.data.digits import _digits_arrays
from cnnarena.data.stratify import stratified_train_test_split
from cnnarena.evaluate.class_scores import class_report, confusion


@pytest.mark.parametrize("trial", range(40))
def test_the_split_is_scikit_learns_index_for_index(trial):
    rng = np.random.default_rng(trial)
    classes = int(rng.integers(2, 12))
    n = int(rng.integers(4 * classes, 400))
    weights = rng.dirichlet(np.full(classes, 0.7 if trial % 2 else 5.0))  # imbalanced and balanced sets
    labels = rng.choice(classes, size=n, p=weights)
    labels[:2 * classes] = np.repeat(np.arange(classes), 2)  # every class can be split
    index = rng.permutation(n) + 1000 * (trial % 3)  # not just 0..n-1
    frac = float(rng.choice([0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5]))
    try:
        theirs = train_test_split(index, test_size=frac, random_state=trial, stratify=labels)
    except ValueError:
        with pytest.raises(ValueError):
            stratified_train_test_split(index, labels, frac, trial)
        return
    ours = stratified_train_test_split(index, labels, frac, trial)
    assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])


def test_a_class_of_one_cannot_be_split_as_in_scikit_learn():
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(ValueError):
        train_test_split(np.arange(7), test_size=0.3, random_state=0, stratify=labels)
    with pytest.raises(ValueError, match="only 1 member"):
        stratified_train_test_split(np.arange(7), labels, 0.3, 0)


@pytest.mark.parametrize("trial", range(20))
def test_the_scores_are_scikit_learns(trial):
    rng = np.random.default_rng(trial)
    classes = int(rng.integers(2, 11))
    truth = rng.integers(0, classes, 300)
    predicted = np.where(rng.random(300) < 0.6, truth, rng.integers(0, classes, 300))
    if trial % 4 == 0:
        predicted[predicted == 1] = 0  # a class never predicted: precision 0/0
    if trial % 5 == 0:
        truth[truth == classes - 1] = 0  # a class absent from the test set: recall 0/0
    names = [f"c{k}" for k in range(classes)]
    theirs = classification_report(truth, predicted, labels=list(range(classes)), target_names=names,
                                   output_dict=True, zero_division=0)
    ours = class_report(confusion(truth, predicted, classes), names)
    for key in [*names, "macro avg", "weighted avg"]:
        for metric in ("precision", "recall", "f1-score"):
            assert ours[key][metric] == pytest.approx(theirs[key][metric], abs=1e-12), (key, metric)
        assert ours[key]["support"] == theirs[key]["support"]
    assert np.array_equal(confusion(truth, predicted, classes),
                          confusion_matrix(truth, predicted, labels=list(range(classes))))


def test_the_digits_are_scikit_learns():
    images, target = _digits_arrays()
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)


def test_a_run_never_imports_scikit_learn(tmp_path):
    script = ("import sys\nfrom cnnarena.config import build_config\nfrom cnnarena.run import train_run\n"
              f"train_run(build_config(None, {{'data': 'digits', 'model': 'simple-2conv', 'epochs': 1, "
              f"'fraction': 0.2}}), {str(tmp_path / 'run')!r})\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
