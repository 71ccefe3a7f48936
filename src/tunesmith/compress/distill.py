"""Training a smaller model against the run it came from (knowledge distillation).

`distill` (a student with fewer layers) and `prune` (narrower or fewer layers, then a short
recovery) both end here. The teacher, the source run's model, scores every training text once;
the student then learns from a mix of two losses:

- soft: KL divergence between the teacher's and the student's class distributions, both
  softened by a temperature T (scaled by T^2, so its gradients stay comparable as T changes).
  A softened distribution says which wrong classes are close, which one-hot labels cannot;
- hard: the usual cross-entropy on the true label, where there is one.

`alpha` weighs them (soft share). With `--hidden-weight W` a third term, W times the hidden-state
loss, asks each student layer to reproduce the output of the teacher layer it was copied from
(TinyBERT's layer-to-layer matching; the student's layers are the teacher's own, so no projection
is needed): the squared difference over real tokens, relative to the teacher's squared size so
its scale does not depend on the model. It costs one teacher forward pass per step (hidden states
of every token are too large to score once and keep) and gives the student more to learn from
than the classes' probabilities. Unlabeled texts (`--unlabeled FILE`) and edited copies of the
training texts (`--augment-copies`) get the soft loss only: the teacher labels them, which is
how a student can see more data than was labelled. Regression runs use the mean squared
difference from the teacher's score as the soft loss.

Only the training split is used for learning, the validation split picks the best checkpoint,
and the test split is scored once, at the end (compress/lineage.finish): as in `train`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tunesmith.data.batching import IGNORE, Features
from tunesmith.errors import UserError
from tunesmith.forward import predict_logits

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


class LayerOutputs:
    """Each encoder layer's output during the forward passes it is switched on for (forward
    hooks on the layer list), so a model with any head gives its hidden states without an
    `output_hidden_states` argument its forward may not take."""

    def __init__(self, model):
        from tunesmith.compress.student import layer_list

        self.on, self.outputs = False, []
        for layer in layer_list(model):
            layer.register_forward_hook(self._keep)

    def _keep(self, _module, _args, output) -> None:
        if self.on:  # off during evaluation and gradient-checkpoint recomputation
            self.outputs.append(output[0] if isinstance(output, tuple) else output)

    def of(self, model, batch: dict):
        """The model's output for `batch` and its layers' outputs."""
        self.on, self.outputs = True, []
        try:
            return model(**batch), self.outputs
        finally:
            self.on = False


def hidden_state_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Mean over layer pairs of sum((s - t)^2) / sum(t^2) over the real (unpadded) tokens."""
    keep = mask.unsqueeze(-1).to(student[0].dtype)
    terms = [((s - t) ** 2 * keep).sum() / ((t ** 2) * keep).sum().clamp_min(1e-6) for s, t in zip(student, teacher)]
    return torch.stack(terms).mean()


def distillation_loss(problem_type: str, temperature: float, alpha: float, hidden_weight: float = 0.0,
                      student=None, teacher_model=None, layer_map: list[int] | None = None):
    """`compute_loss(model, batch) -> (loss, extras)` for the training loop. A `hidden_weight`
    above 0 needs the student, the teacher and which teacher layer each student layer matches."""
    if temperature <= 0:
        raise UserError(f"--temperature {temperature}: give a temperature above 0 (2 is usual)")
    if not 0 <= alpha <= 1:
        raise UserError(f"--alpha {alpha}: give the soft loss's share, from 0 to 1")
    if hidden_weight < 0:
        raise UserError(f"--hidden-weight {hidden_weight}: give 0 (off) or a positive weight (1 is usual)")
    if hidden_weight and student is not None:
        student_layers, teacher_layers = LayerOutputs(student), LayerOutputs(teacher_model)

    def loss(model, batch):
        batch = dict(batch)
        teacher, labels = batch.pop("teacher"), batch.pop("labels")
        hidden = None
        if hidden_weight and student is not None:
            output, states = student_layers.of(model, batch)
            if next(teacher_model.parameters()).device != batch["input_ids"].device:
                teacher_model.to(batch["input_ids"].device)  # the loop moved the student; the teacher follows
            with torch.no_grad():
                targets = teacher_layers.of(teacher_model, batch)[1]
            hidden = hidden_state_loss(states, [targets[i] for i in layer_map], batch["attention_mask"])
            logits = output.logits
        else:
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
        extras = {"soft_loss": soft.detach().item(), "hard_loss": hard.detach().item()}
        total = alpha * soft + (1 - alpha) * hard
        if hidden is not None:
            extras["hidden_loss"] = hidden.detach().item()
            total = total + hidden_weight * hidden
        return total, extras

    return loss


@dataclass(frozen=True)
class Teacher:
    """The run a smaller model learns from, loaded: its folder, settings, task, tokenizer and model."""

    source: object  # the Run
    cfg: object  # its TrainConfig, with the student's epochs and learning rate
    task: object
    tokenizer: object
    model: torch.nn.Module


@dataclass(frozen=True)
class Lesson:
    """How the student learns: the soft loss's temperature and share, and the hidden-state loss's weight."""

    temperature: float = 2.0
    alpha: float = 0.5
    hidden_weight: float = 0.0


def train_student(student, teacher: Teacher, run, lesson: Lesson, extra_texts: list = (),
                  layer_map: list[int] | None = None, resume: bool = False, log=print):
    """Fit `student` in `run`'s folder (checkpoints, history) against `teacher`; returns the
    student with its best validation checkpoint loaded. `layer_map[k]` is the teacher layer
    student layer k started from (for the hidden-state loss)."""
    from tunesmith.data.long_text import LongText
    from tunesmith.train import checkpoint
    from tunesmith.train.loop import Goal, Hooks, fit

    cfg, task, source = teacher.cfg, teacher.task, teacher.source
    labels = source.labels()
    train, val = source.split("train"), source.split("val")
    log(f"teacher: scoring {len(train) + len(extra_texts):,} training texts ...")
    features = student_features(task, teacher.tokenizer, teacher.model, train, labels, cfg.resolved_max_length(),
                                LongText.of(cfg), list(extra_texts))
    val_features = task.encode(teacher.tokenizer, val.texts, val.labels, labels, cfg.resolved_max_length(),
                               use_cache=False, long_text=LongText.of(cfg))
    metric = cfg.resolved_metric()

    def evaluate(model) -> dict:
        return task.metrics(val.labels, task.predict(model, val_features), labels)

    for parameter in student.parameters():
        parameter.requires_grad_(True)
    loss = distillation_loss(task.problem_type, lesson.temperature, lesson.alpha, lesson.hidden_weight, student,
                             teacher.model, layer_map)
    fit(student, features, cfg, run.path, Hooks(evaluate, loss), Goal(metric, task.metrics_higher_is_better[metric]),
        resume=resume, log=log)
    checkpoint.load_weights(checkpoint.find(run.checkpoints / "best"), student)
    return student.eval()
