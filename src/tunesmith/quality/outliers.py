"""Texts far from every class: cosine similarity to the nearest class centroid of the
training features, flagged when it falls far below what training rows get (a robust z-score:
median and MAD, so the outliers themselves do not move the cut-off)."""

from __future__ import annotations

import numpy as np

from tunesmith.evaluate.features import normalise

MAD_CUTOFF = 4.0  # robust z below -4: under 1 row in 10,000 of a normal spread gets there by chance


def centroids(train_x: np.ndarray, train_y: np.ndarray, n_classes: int) -> np.ndarray:
    x = normalise(train_x)
    out = np.zeros((n_classes, x.shape[1]), dtype=np.float32)
    for j in range(n_classes):
        members = x[np.asarray(train_y) == j]
        if len(members):
            out[j] = members.mean(0)
    return normalise(out)


def centroid_similarity(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each row's cosine similarity to its nearest class centroid."""
    return (normalise(x) @ centres.T).max(1)


def cutoff(train_similarity: np.ndarray) -> float:
    median = float(np.median(train_similarity))
    spread = 1.4826 * float(np.median(np.abs(train_similarity - median)))  # MAD, scaled to a std
    return median - MAD_CUTOFF * max(spread, 1e-6)
