"""Likely label errors: confident learning on out-of-fold probe predictions.

Each training row is scored by a linear probe (the untuned baseline's model: logistic
regression on standardised frozen features) that never saw the row: k-fold on the training
split, no validation or test rows involved. Confident learning (Northcutt et al., 2021) then
calls a row suspect when the probe prefers another class j with probability at least j's own
threshold, the mean probability the probe gives j on rows labelled j. Per-class thresholds
matter: a probe is less sure of hard classes, and a fixed cut-off would flag them wholesale.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

# 3 folds flag label errors as well as 5 in half the time, and a probe regularised harder than
# the baseline's (C 0.1, not 1) fits the flipped labels less, so it flags them more precisely
# (docs/benchmarks.md, "Data quality").
FOLDS = 3
PROBE_C = 0.1


@dataclass(frozen=True)
class Suspect:
    row: int  # position in the training split
    given: int  # the label in the data (class id)
    suggested: int  # the class the probe prefers
    confidence: float  # the probe's probability of the suggested class
    given_probability: float  # ... and of the given one


def fold_rows(y: np.ndarray, n_classes: int, k: int = FOLDS, seed: int = 0) -> tuple[np.ndarray, list]:
    """(judged mask, [(fitting rows, held-out rows), ...]): stratified k-fold over the rows
    that can be judged, those whose class has at least two rows (a fold must hold a row out
    while another keeps its class). Nothing is judged when fewer than two classes can be."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    counts = np.bincount(y, minlength=n_classes)
    judged = counts[y] >= 2
    rows = np.flatnonzero(judged)
    if len(np.unique(y[rows])) < 2:
        return np.zeros(len(y), dtype=bool), []
    k = int(max(2, min(k, counts[counts >= 2].min())))
    with warnings.catch_warnings():  # a class rarer than k: sklearn warns, the split is still valid
        warnings.simplefilter("ignore", UserWarning)
        split = StratifiedKFold(k, shuffle=True, random_state=seed).split(rows, y[rows])
        return judged, [(rows[fit_part], rows[held_out]) for fit_part, held_out in split]


def out_of_fold_probs(x: np.ndarray, y: np.ndarray, n_classes: int, folds: int = FOLDS,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities n x n_classes, judged mask): each judged row scored by a probe fitted on
    the folds that do not hold it (`fold_rows`); unjudged rows get NaN."""
    y = np.asarray(y)
    probs = np.full((len(y), n_classes), np.nan)
    judged, parts = fold_rows(y, n_classes, folds, seed)
    for fit_rows, held_rows in parts:
        probs[held_rows] = _probe_probs(x[fit_rows], y[fit_rows], x[held_rows], n_classes)
    return probs, judged


def _probe_probs(x_fit, y_fit, x_out, n_classes: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    from tunesmith.evaluate.baseline import fit_scaler

    scaler = fit_scaler(x_fit)
    probe = LogisticRegression(C=PROBE_C, max_iter=200).fit(scaler.transform(x_fit), y_fit)
    out = np.zeros((len(x_out), n_classes))
    out[:, probe.classes_] = probe.predict_proba(scaler.transform(x_out))
    return out


def confident_suspects(probs: np.ndarray, y: np.ndarray, judged: np.ndarray | None = None) -> list[Suspect]:
    """The confident-learning rule on out-of-fold `probs`; most confident first."""
    y = np.asarray(y)
    judged = np.ones(len(y), dtype=bool) if judged is None else judged
    n_classes = probs.shape[1]
    thresholds = np.full(n_classes, np.inf)  # a class with no judged rows is never suggested
    for j in range(n_classes):
        own = judged & (y == j)
        if own.any():
            thresholds[j] = probs[own, j].mean()
    suspects = []
    for i in np.flatnonzero(judged):
        above = np.flatnonzero(probs[i] >= thresholds)
        if len(above) == 0:
            continue
        best = int(above[np.argmax(probs[i, above])])
        if best != y[i]:
            suspects.append(Suspect(int(i), int(y[i]), best, float(probs[i, best]), float(probs[i, y[i]])))
    return sorted(suspects, key=lambda s: s.given_probability - s.confidence)


def agreement(probs: np.ndarray, y: np.ndarray, judged: np.ndarray) -> tuple[float, float]:
    """(accuracy, Cohen's kappa) of the out-of-fold probe's argmax against the labels, on the
    judged rows: how well the probe can tell the classes apart, which bounds how far its
    disagreements can be trusted."""
    from sklearn.metrics import cohen_kappa_score

    if not judged.any():
        return 0.0, 0.0
    predicted, given = probs[judged].argmax(1), np.asarray(y)[judged]
    kappa = cohen_kappa_score(given, predicted) if len(np.unique(given)) > 1 else 0.0
    return float((predicted == given).mean()), float(kappa)


def find_label_issues(x: np.ndarray, y, n_classes: int, folds: int = FOLDS, seed: int = 0) -> list[Suspect]:
    probs, judged = out_of_fold_probs(x, np.asarray(y), n_classes, folds, seed)
    return confident_suspects(probs, np.asarray(y), judged)
