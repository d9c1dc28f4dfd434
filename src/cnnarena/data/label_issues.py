"""Images whose given label disagrees with out-of-sample predictions (confident learning, cleanlab).

Every probability comes from a model that did not train on that image: k-fold cross-validated predictions of a
fast model, multinomial logistic regression, so that `doctor` needs no trained run and no GPU. Its inputs are a
pretrained backbone's features of each image when the caller gives them (models/embeddings.py), else the images
at 16x16 (the fallback: fine for digits, colour blobs for photos); standardised either way. cleanlab's
`find_label_issues` then flags the images whose given label is less likely than the per-class confidence thresholds
it learns from those predictions, ranked by self-confidence (the probability of the given label), lowest first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FEATURE_SIDE = 16  # pixels per side of the features the fast model sees: enough for digits and clothing shapes
MAX_ITER = 300
# strongly regularised: fewer confident mistakes (the inverse strength for pixels, for a backbone's features)
REGULARISATION = {"pixels": 0.01, "features": 0.01}


@dataclass(frozen=True)
class LabelIssue:
    index: int
    given: int
    likely: int
    given_probability: float
    likely_probability: float


def features(images: torch.Tensor) -> np.ndarray:
    """N×(C·16·16) float32: the images shrunk by area averaging, standardised per feature."""
    return standardised(F.interpolate(images.float() / 255, size=(FEATURE_SIDE, FEATURE_SIDE),
                                      mode="area").flatten(1).numpy())


def standardised(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0, keepdims=True)
    return (x / (x.std(0, keepdims=True) + 1e-6)).astype(np.float32)


def out_of_sample_probabilities(images: torch.Tensor, labels: np.ndarray, folds: int = 5, seed: int = 0,
                                given: np.ndarray | None = None) -> np.ndarray:
    """N×K predicted class probabilities, each from the fold model that did not see that image; from the `given`
    features (N×D) when there are, else from the pixels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    smallest = int(np.bincount(labels).min())
    folds = max(2, min(folds, smallest))
    model = LogisticRegression(max_iter=MAX_ITER, C=REGULARISATION["pixels" if given is None else "features"])
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    x = features(images) if given is None else standardised(given)
    return cross_val_predict(model, x, labels, cv=split, method="predict_proba")


def find_label_issues(images: torch.Tensor, labels: np.ndarray, *, folds: int = 5, seed: int = 0,
                      given: np.ndarray | None = None) -> tuple[list[LabelIssue], np.ndarray]:
    """(issues ranked most suspicious first, the out-of-sample probabilities)."""
    from cleanlab.filter import find_label_issues as cleanlab_find

    labels = np.asarray(labels, dtype=np.int64)
    if len(np.unique(labels)) < 2 or np.bincount(labels).min() < 2:
        return [], np.zeros((len(labels), 0))
    import sklearn

    from .feature_cache import cached_array

    settings = [folds, seed, FEATURE_SIDE, MAX_ITER, REGULARISATION, sklearn.__version__]  # all that shapes them
    probs = cached_array("label-probabilities", settings, [images, labels, given],
                         lambda: out_of_sample_probabilities(images, labels, folds, seed, given))
    ranked = cleanlab_find(labels, probs, return_indices_ranked_by="self_confidence")
    issues = [LabelIssue(int(i), int(labels[i]), int(probs[i].argmax()), round(float(probs[i, labels[i]]), 4),
                         round(float(probs[i].max()), 4)) for i in ranked]
    return issues, probs
