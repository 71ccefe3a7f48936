"""Multi-label classification: any number of labels per text (topics of an article, the
issues a support ticket raises). One sigmoid per label, binary cross-entropy loss.

After training, each label gets its own decision threshold, the one that maximises its F1
on the validation split (never the test split). Rare labels usually want a threshold well
below 0.5. The thresholds are saved in the model's config.json (`tunesmith_thresholds`), so
every later `eval` and `predict` decides the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunesmith.data.targets import LabelSetTarget
from tunesmith.forward import write_rows
from tunesmith.tasks import register_task
from tunesmith.tasks.sequence import SequenceTask

GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # candidate thresholds


@dataclass
class LabelScores:
    probs: np.ndarray  # examples x labels, each in [0, 1]
    thresholds: np.ndarray  # one per label

    def __len__(self) -> int:
        return len(self.probs)

    @classmethod
    def mean(cls, members: list["LabelScores"]) -> "LabelScores":
        """An ensemble's scores: the members' mean probabilities, decided at their mean thresholds."""
        return cls(np.mean([m.probs for m in members], axis=0), np.mean([m.thresholds for m in members], axis=0))

    @property
    def predicted(self) -> np.ndarray:
        return self.probs >= self.thresholds


def multi_hot(targets, labels: list[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(targets), len(labels)), dtype=bool)
    for row, names in enumerate(targets):
        out[row, [index[n] for n in names]] = True
    return out


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], thresholds) -> dict:
    tp = (y_true & y_pred).sum(axis=0)
    pred = y_pred.sum(axis=0)
    gold = y_true.sum(axis=0)

    def f1(t, p, g):
        return 2 * t / (p + g) if p + g else 0.0

    per_class = {
        label: {"precision": float(tp[i] / pred[i]) if pred[i] else 0.0,
                "recall": float(tp[i] / gold[i]) if gold[i] else 0.0,
                "f1": float(f1(tp[i], pred[i], gold[i])), "support": int(gold[i]),
                "threshold": float(thresholds[i])}
        for i, label in enumerate(labels)
    }
    present = [i for i in range(len(labels)) if gold[i]]
    return {
        "micro_f1": float(f1(tp.sum(), pred.sum(), gold.sum())),
        "macro_f1": float(np.mean([per_class[labels[i]]["f1"] for i in present])) if present else 0.0,
        "subset_accuracy": float((y_true == y_pred).all(axis=1).mean()),  # every label of the example right
        "hamming_accuracy": float((y_true == y_pred).mean()),
        "count": int(len(y_true)),
        "per_class": per_class,
    }


class MultiLabelHead:
    problem_type = "multi_label_classification"
    answer = "multi-label"  # one served answer's shape (serve/schemas.py)
    metrics_higher_is_better = {"micro_f1": True, "macro_f1": True, "subset_accuracy": True, "hamming_accuracy": True}
    default_metric = "micro_f1"
    has_baseline = True  # one logistic regression per label on the frozen mean-pooled features
    baseline_name = "a logistic regression per label on frozen features"
    quality_checks = ("near-duplicates", "text")  # label sets: confident learning here is one class per row
    ensemble = ("mean",)  # per-label probabilities average (a vote has no single label)

    @staticmethod
    def count_labels(values):
        return Counter(label for labels in values for label in labels)

    def target_value(self, names, labels: list[str]) -> list[float]:
        return multi_hot([names], labels)[0].astype(float).tolist()

    def outputs(self, logits: np.ndarray, model) -> LabelScores:
        thresholds = getattr(model.config, "tunesmith_thresholds", None) or [0.5] * logits.shape[1]
        return LabelScores(1.0 / (1.0 + np.exp(-logits)), np.asarray(thresholds, dtype=np.float32))

    def metrics(self, targets, scores: LabelScores, labels) -> dict:
        return multilabel_metrics(multi_hot(targets, labels), scores.predicted, labels, scores.thresholds)

    def summary(self, metrics: dict) -> str:
        return (f"micro-F1 {metrics['micro_f1']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
                f"subset accuracy {metrics['subset_accuracy']:.4f}")

    def tune(self, model, scores: LabelScores, targets, labels) -> dict:
        thresholds = tune_thresholds(multi_hot(targets, labels), scores.probs)
        model.config.tunesmith_thresholds = [float(t) for t in thresholds]
        return {"thresholds": dict(zip(labels, model.config.tunesmith_thresholds))}

    def start_head(self, model, train, train_targets, labels, seed) -> str | None:
        """A mean-pooled head starts as the per-label probes (see TextClassificationHead.start_head)."""
        from tunesmith.evaluate.baseline import fit_multilabel_probe
        from tunesmith.tasks.mean_pool import MeanPoolClassifier

        if not isinstance(model, MeanPoolClassifier):
            return None
        scaler, weight, bias = fit_multilabel_probe(model.body, [r["input_ids"] for r in train.rows],
                                                    multi_hot(train_targets, labels), train.pad_id, seed)
        model.load_probe(scaler, weight, bias)
        return "head: starts as one logistic-regression probe per label on the mean-pooled training texts"

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        from tunesmith.evaluate.baseline import embed, fit_multilabel_probe

        encoder = getattr(model, model.base_model_prefix)
        scaler, weight, bias = fit_multilabel_probe(encoder, [r["input_ids"] for r in train.rows],
                                                    multi_hot(train_targets, labels), train.pad_id, seed)
        logits = scaler.transform(embed(encoder, [r["input_ids"] for r in test.rows], test.pad_id)) @ weight.T + bias
        thresholds = np.full(len(labels), 0.5)
        chosen = (1.0 / (1.0 + np.exp(-logits))) >= thresholds
        return {**multilabel_metrics(multi_hot(test_targets, labels), chosen, labels, thresholds),
                "description": "one logistic regression per label on frozen mean-pooled features, threshold 0.5"}

    def output_rows(self, scores: LabelScores) -> list:
        return [(p, c) for p, c in zip(scores.probs, scores.predicted)]

    def serve_output(self, row, labels: list[str], top_k: int | None) -> dict:
        probs, chosen = row
        order = probs.argsort()[::-1][:top_k] if top_k else probs.argsort()[::-1]
        return {"labels": [l for l, c in zip(labels, chosen) if c],
                "scores": {labels[int(i)]: float(probs[int(i)]) for i in order}}

    def write_predictions(self, path: Path, rows, scores: LabelScores, labels) -> None:
        write_rows(path, [{**row, "labels": "|".join(l for l, c in zip(labels, chosen) if c),
                           **{f"score_{l}": round(float(p), 6) for l, p in zip(labels, probs)}}
                          for row, chosen, probs in zip(rows, scores.predicted, scores.probs)])


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per label, the grid threshold with the best F1 on these examples (ties: the one nearest 0.5).
    Labels without a positive example keep 0.5: there is nothing to tune on."""
    thresholds = np.full(y_true.shape[1], 0.5)
    for j in range(y_true.shape[1]):
        if not y_true[:, j].any():
            continue
        predicted = probs[:, j][:, None] >= GRID[None, :]
        tp = (predicted & y_true[:, j][:, None]).sum(axis=0)
        f1 = 2 * tp / (predicted.sum(axis=0) + y_true[:, j].sum())
        best = np.flatnonzero(f1 == f1.max())
        thresholds[j] = GRID[best[np.argmin(np.abs(GRID[best] - 0.5))]]
    return thresholds


register_task(SequenceTask("multi-label-classification", LabelSetTarget(), MultiLabelHead(), pairs=False))
