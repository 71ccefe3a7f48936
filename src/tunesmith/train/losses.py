"""Classification losses beyond plain cross-entropy, for single-label classifiers (text, text
pairs, images). Each is one config key; with none set, the model's own loss is used.

- label smoothing (Szegedy et al. 2016): the target puts 1 - e on the class and e spread
  over all classes; curbs over-confident models, often +0.2..1 point on noisy labels.
- class weights: "balanced" weighs each class by n / (k * count), so a rare class counts as
  much as a common one in the loss (imbalanced data: intents, fraud, alerts).
- focal loss (Lin et al. 2017): (1 - p)^gamma down-weights examples the model already gets
  right, so training spends itself on the hard ones.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F

from tunesmith.data.long_text import pooled_loss, sequence_logits


def balanced_weights(train_labels: list, labels: list[str]) -> torch.Tensor:
    counts = Counter(train_labels)
    n, k = len(train_labels), len(labels)
    return torch.tensor([n / (k * max(counts.get(label, 0), 1)) for label in labels], dtype=torch.float32)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0,
                        weights: torch.Tensor | None = None, focal_gamma: float = 0.0) -> torch.Tensor:
    if focal_gamma == 0.0:
        return F.cross_entropy(logits, targets, weight=weights, label_smoothing=label_smoothing)
    log_p = F.log_softmax(logits.float(), dim=-1)
    n_classes = logits.shape[-1]
    # The (smoothed) target distribution, and per example -sum q log p with the focal factor
    # (1 - p_true)^gamma; class weights scale each example by its true class's weight.
    target = F.one_hot(targets, n_classes).float() * (1 - label_smoothing) + label_smoothing / n_classes
    p_true = log_p.gather(1, targets[:, None]).squeeze(1).exp()
    per_example = (1 - p_true) ** focal_gamma * -(target * log_p).sum(-1)
    if weights is None:
        return per_example.mean()
    w = weights.to(logits.device)[targets]
    return (w * per_example).sum() / w.sum()


def loss_for(cfg, task, train_labels: list, labels: list[str]):
    """`compute_loss(model, batch) -> (loss, {})` for the loop, or None for the model's own loss."""
    pool = task.window_pool if cfg.long_text == "chunk" else None  # rows of several windows, pooled
    if not (cfg.label_smoothing or cfg.class_weights != "none" or cfg.focal_gamma):
        return pooled_loss(task.problem_type, pool) if pool else None
    weights = balanced_weights(train_labels, labels) if cfg.class_weights == "balanced" else None

    def compute_loss(model, batch):
        logits = sequence_logits(model, batch, pool)
        return classification_loss(logits, batch["labels"], cfg.label_smoothing, weights, cfg.focal_gamma), {}

    return compute_loss


