"""Fine-tuning methods, registered by name (one module each, like PEFT's tuners/).

A method decides which parameters train (`apply`), its default learning rate, and how the
tuned model becomes a plain `transformers` model for the run folder (`export`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

METHODS: dict[str, "Method"] = {}


class Method(Protocol):
    name: str
    default_lr: float

    def apply(self, model, cfg): ...  # -> the model to train (possibly wrapped)
    def export(self, model, folder: Path): ...  # -> plain transformers model; may save extras in folder
    # Optional: `check(cfg)` refuses a run this machine cannot do, before anything is written;
    # `trains = False`: nothing to train (zero-shot); `training_loss(model, batch)`: the method's
    # own loss (few-shot's contrastive stage); `fit_head(model, train_features, targets, labels)`:
    # a head fitted outside the loop, before every validation and on the best checkpoint.


def register_method(method: "Method") -> "Method":
    METHODS[method.name] = method
    return method


def count_parameters(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "trainable_pct": 100.0 * trainable / total}


def restore(model, folder: str):
    """A saved run's model with what plain transformers drops on load put back: bottleneck
    adapters, or a prompt encoder (prefix, prompt, ptuning)."""
    from tunesmith.methods.adapter import restore_adapters
    from tunesmith.methods.prompt_learning import restore_prompt

    return restore_prompt(restore_adapters(model, folder), folder)


from tunesmith.methods import (  # noqa: E402,F401  (they register themselves)
    adalora, adapter, bitfit, embedding, freeze, full, ia3, lora, prompt_learning, qlora)
