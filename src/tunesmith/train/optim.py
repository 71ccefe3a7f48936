"""AdamW with decoupled weight decay, and warmup + decay learning-rate schedules."""

from __future__ import annotations

import math

import torch


def build_optimizer(model, lr: float, weight_decay: float, layer_decay: float = 1.0,
                    head_lr: float | None = None) -> torch.optim.AdamW:
    """AdamW; with `layer_decay` < 1, layer-wise learning-rate decay (Clark et al. 2020, ELECTRA):
    the head trains at `lr`, the top block at lr * d, the next at lr * d^2, ..., the embeddings
    at lr * d^(L+1). Lower layers hold general features that should move least.
    `head_lr`: the rate of everything outside the pretrained body (the task head)."""
    from tunesmith.methods.layers import blocks, body_of, layer_index

    stack = blocks(body_of(model)) if layer_decay < 1.0 else None
    depth = len(stack) if stack is not None else 0
    body_ids = {id(p) for p in body_of(model).parameters()}
    head_factor = (head_lr / lr) if head_lr else 1.0

    def scale(name: str, param) -> float:
        if id(param) not in body_ids:
            return head_factor
        if not depth:
            return 1.0
        index = layer_index(name)
        if index is not None:
            return layer_decay ** (depth - index)
        return layer_decay ** (depth + 1)  # embeddings

    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # Weight decay on biases and LayerNorm gains only pulls them toward zero for no
        # regularisation benefit (BERT, Devlin et al.), so those get none.
        decay = 0.0 if param.ndim < 2 or "norm" in name.lower() else weight_decay
        groups.setdefault((decay, scale(name, param)), []).append(param)
    return torch.optim.AdamW([{"params": params, "weight_decay": decay, "lr": lr * factor}
                              for (decay, factor), params in groups.items()], lr=lr)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak learning rate at `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(1.0, progress)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress  # linear


def build_scheduler(optimizer, kind: str, total_steps: int, warmup_ratio: float):
    warmup = int(round(total_steps * warmup_ratio))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup, kind))
