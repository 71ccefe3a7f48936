"""Thresholds that trade coverage for accuracy, chosen on held-out data.

For a confidence (the intent classifier's top probability, or the retrieval's top similarity)
and whether the answer it backs is right, every threshold gives a coverage (the share of
questions answered at or above it) and an accuracy (among those answered). A question outside
the known intents counts as wrong if it is answered: raising the threshold is what keeps such
questions from being forced into an intent. The threshold chosen is the lowest whose
accuracy reaches the target (the most coverage at that accuracy); if none does, the one with
the best accuracy.
"""

from __future__ import annotations

import numpy as np

TARGET_ACCURACY = 0.9  # among answered questions: one wrong answer in ten; a hand-off for the rest
POINTS = 50  # thresholds on the curve


def curve(confidence, correct) -> list[dict]:
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    thresholds = np.unique(np.quantile(confidence, np.linspace(0, 1, POINTS))) if len(confidence) else []
    rows = []
    for t in thresholds:
        answered = confidence >= t
        rows.append({"threshold": round(float(t), 6), "coverage": round(float(answered.mean()), 4),
                     "accuracy": round(float(correct[answered].mean()), 4) if answered.any() else 1.0})
    return rows


def choose(points: list[dict], target: float = TARGET_ACCURACY) -> float:
    if not points:
        return 1.0
    reaching = [p for p in points if p["accuracy"] >= target]
    best = min(reaching, key=lambda p: p["threshold"]) if reaching else max(points, key=lambda p: (p["accuracy"], -p["threshold"]))
    return best["threshold"]


def out_of_scope_scores(confidence, in_scope, threshold: float) -> dict:
    """Precision and recall of "out of scope" (confidence below the threshold) against the truth."""
    flagged = np.asarray(confidence, dtype=float) < threshold
    truth = ~np.asarray(in_scope, dtype=bool)
    hits = float((flagged & truth).sum())
    return {"precision": hits / flagged.sum() if flagged.any() else 0.0,
            "recall": hits / truth.sum() if truth.any() else 0.0}
