"""Continual learning: `tunesmith train --from RUN --data new.csv` keeps training a finished run.

- Start: the run's saved model (merged weights), under its own labels, with any new labels of
  the new data appended: the head gains rows for them, the old rows are kept as they are.
- Replay (`--replay`): old training examples mixed into the new training split, a fixed share
  per new example (rehearsal, the simplest defence against forgetting).
- EWC (`--ewc-lambda`, Kirkpatrick et al. 2017): a penalty (lambda / 2) * sum F_i (w_i - w*_i)^2
  that holds each weight near its old value w* in proportion to its importance F_i, the
  diagonal Fisher information of the old model on old training examples.
- Forgetting: the old run's test split is scored again by the new model; the report puts it
  beside the score the old run recorded on it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from tunesmith.data.labeled import Examples
from tunesmith.errors import UserError
from tunesmith.runs import Run

FISHER_SAMPLES = 200  # old training examples that estimate the Fisher information (one pass each)


def prior_run(cfg) -> Run:
    """The finished run to continue from, checked against the new config."""
    run = Run(Path(cfg.from_run))
    if not run.config_file.is_file():
        raise UserError(f"--from {cfg.from_run}: not a run folder (no config.yaml)")
    if not run.finished:
        raise UserError(f"--from {cfg.from_run}: the run did not finish; finish it first with --resume {cfg.from_run}")
    task = run.settings().task
    if task != cfg.task:
        raise UserError(f"--from {cfg.from_run}: that run is {task}, this one {cfg.task}; continue with --task {task}")
    from tunesmith.methods import METHODS

    if cfg.ewc_lambda and not METHODS[cfg.method].tunes_own_weights:
        own = ", ".join(name for name, method in METHODS.items() if method.tunes_own_weights)
        raise UserError(f"--ewc-lambda: needs a method that trains the model's own weights ({own}), "
                        f"not {cfg.method}; use --replay alone, or --method full")
    return run


def extended_labels(old: list[str], new: list[str]) -> list[str]:
    """The old labels in their order (their class ids stay valid), then the new ones."""
    return list(old) + [label for label in new if label not in set(old)]


def extend_head(model, old: list[str], labels: list[str]):
    """Give the classifier one output row per added label; the old rows are copied unchanged."""
    if labels == list(old):
        return model
    from tunesmith.methods.layers import body_of

    body = {id(p) for p in body_of(model).parameters()}
    heads = [(name, m) for name, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and m.out_features == len(old) and id(m.weight) not in body]
    if not heads:
        raise UserError(f"--from: cannot find the classification layer with {len(old)} outputs to extend")
    name, old_layer = heads[-1]
    layer = torch.nn.Linear(old_layer.in_features, len(labels), bias=old_layer.bias is not None)
    with torch.no_grad():  # new rows: initialised like a fresh head; old rows: exactly as trained
        layer.weight[: len(old)] = old_layer.weight
        if layer.bias is not None:
            layer.bias[: len(old)] = old_layer.bias
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, layer)
    model.config.num_labels = len(labels)
    if hasattr(model, "num_labels"):  # transformers heads keep a copy that their loss reshapes by
        model.num_labels = len(labels)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    return model


def with_replay(new: Examples, old: Examples, ratio: float, seed: int) -> Examples:
    """The new training examples plus `ratio` old ones per new one (as many as there are)."""
    count = min(len(old), round(ratio * len(new)))
    if not count:
        return new
    picked = sorted(random.Random(seed).sample(range(len(old)), count))
    return Examples(list(new.texts) + [old.texts[i] for i in picked], list(new.labels) + [old.labels[i] for i in picked],
                    new.source)


class EWC:
    """The penalty's anchor weights w* and importances F (diagonal Fisher information), for
    every weight of the old model, head included: its old rows carry the old classes."""

    def __init__(self, model, features, lam: float):
        self.lam = lam
        self.params = dict(model.named_parameters())
        self.anchor = {n: p.detach().clone() for n, p in self.params.items()}
        self.fisher = {n: torch.zeros_like(p) for n, p in self.params.items()}
        was_training = model.training
        model.eval()
        count = len(features)
        for i in range(count):  # one example at a time: the Fisher is a mean of squared per-example gradients
            model.zero_grad(set_to_none=True)
            model(**features.batch([i])).loss.backward()
            for n, p in self.params.items():
                if p.grad is not None:
                    self.fisher[n] += p.grad.detach() ** 2 / count
        model.zero_grad(set_to_none=True)
        model.train(was_training)

    def bind(self, model) -> None:
        """Follow the weights into the model that trains (after the head grew and the method
        chose what trains); the objects, not names, are kept: a DDP wrapper renames them."""
        named = dict(model.named_parameters())
        self.params = {n: named[n] for n in self.anchor if n in named}

    def penalty(self) -> torch.Tensor:
        total = torch.zeros(())
        for n, p in self.params.items():
            if not p.requires_grad:
                continue
            fisher, anchor = self.fisher[n].to(p.device), self.anchor[n].to(p.device)
            old = p if p.shape == anchor.shape else p[: anchor.shape[0]]  # an extended head: its old rows
            total = total.to(p.device) + (fisher * (old - anchor) ** 2).sum()
        return 0.5 * self.lam * total

    def loss(self, base):
        """`base(model, batch) -> (loss, extras)` with the penalty added."""
        def with_penalty(model, batch):
            loss, extras = base(model, batch)
            penalty = self.penalty()
            return loss + penalty, {**extras, "ewc_penalty": float(penalty)}
        return with_penalty


def forgetting(before: dict, after: dict, metric: str, higher_better: bool) -> dict:
    """The old test split's metric as the old run recorded it and under the new model.

    Accuracy comes along where the task has it: a macro average after new labels were added
    also averages over the new classes the model now predicts on old rows (each with F1 0),
    which can halve it while accuracy drops a few points; accuracy says plainly how many old
    rows are still right.
    """
    drop = (before[metric] - after[metric]) if higher_better else (after[metric] - before[metric])
    result = {"metric": metric, "before": before[metric], "after": after[metric], "forgetting": drop}
    if metric != "accuracy" and "accuracy" in before and "accuracy" in after:
        result["accuracy"] = forgetting(before, after, "accuracy", higher_better=True)
    return result


def old_metrics(run: Run) -> dict:
    return json.loads(run.metrics_file.read_text())["test"]
