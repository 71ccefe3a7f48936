"""Training a smaller model against the run it came from (knowledge distillation).

`distill` (a student with fewer layers) and `prune` (narrower or fewer layers, then a short
recovery) both end here. The teacher, the source run's model, scores every training text once;
the student then learns from a mix of two losses:

- soft: KL divergence between the teacher's and the student's class distributions, both
  softened by a temperature T (scaled by T^2, so its gradients stay comparable as T changes).
  A softened distribution says which wrong classes are close, which one-hot labels cannot;
- hard: the usual cross-entropy on the true label, where there is one.

`alpha` weighs them (soft share). Unlabeled texts (`--unlabeled FILE`) and edited copies of the
training texts (`--augment-copies`) get the soft loss only: the teacher labels them, which is
how a student can see more data than was labelled. Regression runs use the mean squared
difference from the teacher's score as the soft loss.

Only the training split is used for learning, the validation split picks the best checkpoint,
and the test split is scored once, at the end (compress/lineage.finish): as in `train`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.data.batching import IGNORE, Features
from tunesmith.errors import UserError
from tunesmith.inference import predict_logits

PROBLEMS = ("single_label_classification", "regression")  # what the soft loss is defined for here


def check_distillable(task, cfg, verb: str) -> None:
    """Refuse, before any work, what this module cannot train."""
    from tunesmith.tasks import TASKS

    if task.problem_type not in PROBLEMS:
        able = [name for name, t in TASKS.items() if t.problem_type in PROBLEMS]
        raise UserError(f"{verb}: {task.name} runs cannot be {verb}ed yet (supported: {', '.join(able)})")
    if cfg.long_text == "chunk":
        raise UserError(f"{verb}: runs trained with --long-text chunk cannot be {verb}ed yet (a text's windows "
                        "are scored together); use a run trained with truncate or head-tail")


def student_features(task, tokenizer, teacher, train, labels: list[str], max_length: int, long_text,
                     extra_texts: list) -> Features:
    """The training split (true labels) and `extra_texts` (unlabeled), each row with the
    teacher's logits under "teacher"."""
    labeled = task.encode(tokenizer, train.texts, train.labels, labels, max_length, use_cache=False,
                          long_text=long_text)
    rows = list(labeled.rows)
    if extra_texts:
        unlabeled = task.encode(tokenizer, extra_texts, None, labels, max_length, use_cache=False, long_text=long_text)
        blank = IGNORE if task.problem_type == "single_label_classification" else float("nan")
        rows += [{**row, "labels": blank} for row in unlabeled.rows]
    features = Features(rows, labeled.pad_id)
    logits = predict_logits(teacher, features)  # before "teacher" joins the rows: the model takes no such input
    for row, scores in zip(features.rows, logits):
        row["teacher"] = [float(x) for x in scores]
    return features


def distillation_loss(problem_type: str, temperature: float, alpha: float):
    """`compute_loss(model, batch) -> (loss, extras)` for the training loop."""
    if temperature <= 0:
        raise UserError(f"--temperature {temperature}: give a temperature above 0 (2 is usual)")
    if not 0 <= alpha <= 1:
        raise UserError(f"--alpha {alpha}: give the soft loss's share, from 0 to 1")

    def loss(model, batch):
        batch = dict(batch)
        teacher, labels = batch.pop("teacher"), batch.pop("labels")
        logits = model(**batch).logits
        if problem_type == "regression":
            soft = F.mse_loss(logits.squeeze(-1), teacher.squeeze(-1))
            known = ~torch.isnan(labels)
            hard = F.mse_loss(logits.squeeze(-1)[known], labels[known]) if known.any() else logits.sum() * 0
        else:
            t = temperature
            soft = F.kl_div(F.log_softmax(logits / t, -1), F.softmax(teacher / t, -1), reduction="batchmean") * t * t
            known = labels != IGNORE
            hard = F.cross_entropy(logits[known], labels[known]) if known.any() else logits.sum() * 0
        return alpha * soft + (1 - alpha) * hard, {"soft_loss": soft.detach().item(), "hard_loss": hard.detach().item()}

    return loss


def train_student(student, teacher, source, run, cfg, task, tokenizer, extra_texts: list, temperature: float,
                  alpha: float, log):
    """Fit `student` in `run`'s folder (checkpoints, history) against `teacher`; returns the
    student with its best validation checkpoint loaded."""
    from tunesmith.data.long_text import LongText
    from tunesmith.train import checkpoint
    from tunesmith.train.loop import fit

    labels = source.labels()
    train, val = source.split("train"), source.split("val")
    log(f"teacher: scoring {len(train) + len(extra_texts):,} training texts ...")
    features = student_features(task, tokenizer, teacher, train, labels, cfg.resolved_max_length(), LongText.of(cfg),
                                extra_texts)
    val_features = task.encode(tokenizer, val.texts, val.labels, labels, cfg.resolved_max_length(), use_cache=False,
                               long_text=LongText.of(cfg))
    metric = cfg.resolved_metric()

    def evaluate(model) -> dict:
        return task.metrics(val.labels, task.predict(model, val_features), labels)

    for parameter in student.parameters():
        parameter.requires_grad_(True)
    fit(student, features, evaluate, cfg, run.path, metric, task.metrics_higher_is_better[metric], log=log,
        compute_loss=distillation_loss(task.problem_type, temperature, alpha))
    checkpoint.load_weights(checkpoint.find(run.checkpoints / "best"), student)
    return student.eval()

