"""Images unlike the rest of their class, from a pretrained backbone's features: a photo of something else filed in
the class, a blank or corrupt-looking frame, a screenshot among photos.

Each image's score is how far its features point from the mean of the others in its class (1 - cosine). Within a
class, an image is named when its score is an outlier by the modified z-score (Iglewicz and Hoaglin: median and
median absolute deviation, so the outliers themselves do not hide the outliers), above MIN_Z. No fixed share of the
images is named: a clean class names none.
"""

from __future__ import annotations

import numpy as np

MIN_Z = 3.5  # Iglewicz and Hoaglin's recommended cut-off for the modified z-score
MIN_CLASS = 5  # fewer images than this say nothing about what a class looks like


def unlike_their_class(features: np.ndarray, labels: np.ndarray) -> list[tuple[int, float, float]]:
    """(index, score, modified z) of the images named, most unusual first. features: N×D, labels: N."""
    features = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-8)
    named = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < MIN_CLASS:
            continue
        total = features[members].sum(0)
        others = total[None, :] - features[members]  # the class without the image itself
        others /= np.linalg.norm(others, axis=1, keepdims=True) + 1e-8
        score = 1 - (features[members] * others).sum(1)
        median = np.median(score)
        spread = np.median(np.abs(score - median))
        if spread <= 0:
            continue
        z = 0.6745 * (score - median) / spread
        named += [(int(members[k]), float(score[k]), float(z[k])) for k in np.flatnonzero(z > MIN_Z)]
    return sorted(named, key=lambda t: -t[2])
