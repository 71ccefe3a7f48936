"""The loss the training loop minimises, composed in one place.

In order: the method's own loss (few-shot's contrastive stage), else the task's (causal-LM
answer tokens, DPO), else the classification options (label smoothing, class weights, focal
loss; pooled windows for --long-text chunk), else the model's own loss; then an adversarial
perturbation around it, then continual learning's EWC penalty on top. The config refuses the
options that cannot apply (loss options beside a method's own loss), so nothing set here is
silently dropped.
"""

from __future__ import annotations

from functools import partial

from tunesmith.train.adversarial import adversarial_loss, model_loss
from tunesmith.train.losses import loss_for


def training_objective(cfg, task, method, processor, train_labels: list, labels: list[str], ewc=None):
    """`compute_loss(model, batch) -> (loss, extras)` for `fit`, or None for the model's own loss."""
    if method.training_loss is not None:
        loss = method.training_loss
    elif task.training_loss is not None:
        loss = partial(task.training_loss, processor=processor)
    else:
        loss = loss_for(cfg, task, train_labels, labels)
    if cfg.adversarial != "none":
        loss = adversarial_loss(loss or model_loss, cfg.adversarial, cfg.adv_epsilon, cfg.adv_steps)
    if ewc is not None:
        loss = ewc.loss(loss or model_loss)
    return loss
