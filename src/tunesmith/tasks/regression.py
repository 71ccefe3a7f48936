"""Regression: a number per text or per text pair (a rating, how likely a user is to click an
item from its description). One linear output, mean-squared-error loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunesmith.data.targets import NumberTarget
from tunesmith.forward import write_rows
from tunesmith.tasks import register_task
from tunesmith.tasks.sequence import SequenceTask


def regression_metrics(y_true, y_pred) -> dict:
    from scipy.stats import pearsonr, spearmanr

    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    error = y_pred - y_true
    mse = float(np.mean(error**2))
    variance = float(np.var(y_true))
    constant = np.ptp(y_pred) == 0 or np.ptp(y_true) == 0  # correlation is undefined; report 0
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - mse / variance if variance > 0 else 0.0,
        "pearson": 0.0 if constant else float(pearsonr(y_true, y_pred)[0]),
        "spearman": 0.0 if constant else float(spearmanr(y_true, y_pred)[0]),
        "count": int(len(y_true)),
    }


class RegressionHead:
    problem_type = "regression"
    answer = "regression"  # one served answer's shape (serve/schemas.py)
    metrics_higher_is_better = {"mse": False, "rmse": False, "mae": False, "r2": True, "pearson": True, "spearman": True}
    default_metric = "mse"  # what the loss optimises; pick spearman when only the ranking matters
    has_baseline = True  # ridge regression on the frozen mean-pooled features
    baseline_name = "ridge regression on frozen features"
    quality_checks = ("near-duplicates", "text")  # scores have no classes to disagree with or be far from
    ensemble = ("mean",)  # scores average; there is no label to vote on

    @staticmethod
    def count_labels(values):
        return None  # numbers have no class balance; checks report their spread instead

    def target_value(self, value: float, labels: list[str]) -> float:
        return float(value)

    def outputs(self, logits: np.ndarray, model) -> np.ndarray:
        return logits[:, 0]

    def metrics(self, targets, scores, labels) -> dict:
        return regression_metrics(targets, scores)

    def summary(self, metrics: dict) -> str:
        return (f"RMSE {metrics['rmse']:.4f}, MAE {metrics['mae']:.4f}, Pearson {metrics['pearson']:.4f}, "
                f"Spearman {metrics['spearman']:.4f}")

    def tune(self, model, scores, targets, labels) -> dict:
        return {}

    def start_head(self, model, train, train_targets, labels, seed) -> str | None:
        """A mean-pooled head starts as the ridge probe (see TextClassificationHead.start_head)."""
        from tunesmith.evaluate.baseline import fit_ridge
        from tunesmith.tasks.mean_pool import MeanPoolClassifier

        if not isinstance(model, MeanPoolClassifier):
            return None
        scaler, weight, bias = fit_ridge(model.body, [r["input_ids"] for r in train.rows], train_targets,
                                         train.pad_id, seed)
        model.load_probe(scaler, weight, bias)
        return "head: starts as the ridge-regression probe on the mean-pooled training texts"

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        from tunesmith.evaluate.baseline import embed, fit_ridge

        encoder = getattr(model, model.base_model_prefix)
        scaler, weight, bias = fit_ridge(encoder, [r["input_ids"] for r in train.rows], train_targets, train.pad_id, seed)
        scores = scaler.transform(embed(encoder, [r["input_ids"] for r in test.rows], test.pad_id)) @ weight[0] + bias[0]
        return {**regression_metrics(test_targets, scores),
                "description": "ridge regression on frozen mean-pooled features"}

    def output_rows(self, scores) -> list:
        return list(scores)

    def serve_output(self, score, labels: list[str], top_k: int | None) -> dict:
        return {"score": float(score)}

    def write_predictions(self, path: Path, rows, scores, labels) -> None:
        write_rows(path, [{**row, "score": round(float(s), 6)} for row, s in zip(rows, scores)])


register_task(SequenceTask("regression", NumberTarget(), RegressionHead(), pairs=None))
