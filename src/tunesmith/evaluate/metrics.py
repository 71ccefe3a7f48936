"""Classification metrics (scikit-learn's definitions, so numbers match what users know)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(y_true, probs, labels: list[str]) -> dict:
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    y_pred = probs.argmax(axis=1)
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    # Cross-entropy of the predicted distribution: lets "loss" be a selection metric too.
    picked = probs[np.arange(len(y_true)), y_true]
    # Averages run over the classes that occur (in the truth or the predictions), as scikit-learn
    # does by default: a class absent from this test split would otherwise count as F1 0.
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "loss": float(-np.log(np.clip(picked, 1e-12, 1.0)).mean()),
        "count": int(len(y_true)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "weighted_f1": True, "loss": False}
