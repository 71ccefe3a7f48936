"""Text classification and text-pair classification: one label per text or per pair
(sentiment, topic, intent; paraphrase, question-answer match, NLI)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from tunesmith.data.targets import ClassTarget
from tunesmith.evaluate.baseline import fit_probe, linear_probe, probe_as_linear_layer
from tunesmith.evaluate.metrics import HIGHER_IS_BETTER, classification_metrics
from tunesmith.forward import softmax, write_predictions
from tunesmith.tasks import register_task
from tunesmith.tasks.sequence import SequenceTask


class ClassifierHead:
    """Softmax over classes, cross-entropy loss; outputs are class probabilities."""

    problem_type = "single_label_classification"
    answer = "classification"  # one served answer's shape (serve/schemas.py)
    metrics_higher_is_better = HIGHER_IS_BETTER
    default_metric = "macro_f1"
    ensemble = ("mean", "vote")  # probabilities average; labels can be voted on
    has_baseline = True  # a linear probe on frozen features shows what fine-tuning bought
    baseline_name = "a linear probe on frozen features"
    # One class per row: label errors (probe disagreement) and distance from every class mean.
    quality_checks = ("label-errors", "near-duplicates", "outliers", "text")
    count_labels = staticmethod(Counter)

    def target_value(self, label: str, labels: list[str]) -> int:
        return labels.index(label)

    def outputs(self, logits: np.ndarray, model) -> np.ndarray:
        return softmax(logits)

    def metrics(self, targets, probs, labels) -> dict:
        class_id = {label: i for i, label in enumerate(labels)}
        return classification_metrics([class_id[t] for t in targets], probs, labels)

    def summary(self, metrics: dict) -> str:
        return f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"

    def tune(self, model, probs, targets, labels) -> dict:
        return {}  # argmax needs no threshold

    def start_head(self, model, train, train_targets, labels, seed) -> str | None:
        """A mean-pooled head (tasks/mean_pool.py) starts as the linear probe fitted on the
        training split, so tuning begins where the untuned baseline ends (a random head first
        spends its steps finding what the probe finds in seconds). None: nothing done (a
        transformers head reads the pooler, not the features the probe saw)."""
        from tunesmith.tasks.mean_pool import MeanPoolClassifier

        if not isinstance(model, MeanPoolClassifier):
            return None
        class_id = {label: i for i, label in enumerate(labels)}
        scaler, probe = fit_probe(model.body, [r["input_ids"] for r in train.rows], [class_id[t] for t in train_targets],
                                  train.pad_id, seed)
        weight, bias = probe_as_linear_layer(probe, len(labels))
        model.load_probe(scaler, weight, bias)
        return "head: starts as the linear probe on the mean-pooled training texts"

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        encoder = getattr(model, model.base_model_prefix)
        class_id = {label: i for i, label in enumerate(labels)}
        return linear_probe(encoder, [r["input_ids"] for r in train.rows], [class_id[t] for t in train_targets],
                            [r["input_ids"] for r in test.rows], [class_id[t] for t in test_targets],
                            labels, train.pad_id, classification_metrics, seed)

    def write_predictions(self, path: Path, rows, probs, labels) -> None:
        write_predictions(path, rows, probs, labels)

    def output_rows(self, probs) -> list:
        return list(probs)

    def serve_output(self, row, labels: list[str], top_k: int | None) -> dict:
        order = row.argsort()[::-1]
        best = int(order[0])
        keep = order[:top_k] if top_k else order
        return {"label": labels[best], "score": float(row[best]),
                "scores": {labels[int(i)]: float(row[int(i)]) for i in keep}}


register_task(SequenceTask("text-classification", ClassTarget(), ClassifierHead(), pairs=False))
register_task(SequenceTask("text-pair-classification", ClassTarget(), ClassifierHead(), pairs=True))
