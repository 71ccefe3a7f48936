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

    tasks: tuple[str, ...] | None  # the tasks it can tune (None: every task)
    trains: bool  # False: nothing to train (zero-shot)
    tunes_own_weights: bool  # the model's own weights train, not added ones (what EWC protects)
    long_text_modes: tuple[str, ...]  # how it can read texts longer than max_length (data/long_text.py)
    settings: tuple[type, ...]  # its settings sections, defined beside it (LoraSettings, ...): keys only it reads
    mean_pooling: bool  # may tune a head on the body's mean-pooled states (tasks/mean_pool.py)
    exportable: bool  # its runs' models export to ONNX (where the task's do)
    relative_cost: float  # one training example's cost in forward passes (the time estimates of train and auto)

    def apply(self, model, cfg, task): ...  # -> the model to train for `task` (possibly wrapped)
    def export(self, model, folder: Path): ...  # -> plain transformers model; may save extras in folder
    def check(self, cfg, task) -> None: ...  # refuses a run this machine cannot do, before anything is written
    def search_space(self, lr: float) -> dict: ...  # `tune`'s default space, as a `search:` block
    def lr_for_steps(self, steps: int) -> float: ...  # the default rate for a run of `steps` optimizer steps
    # Hooks, None where the method has none (MethodDefaults): `training_loss(model, batch)`,
    # the method's own loss (few-shot's contrastive stage; the config refuses loss options
    # beside it); `fit_head(model, train_features, targets, labels)`, a head fitted outside
    # the loop before every validation and on the best checkpoint; `on_step(model, step,
    # total_steps)`, after each optimizer step (AdaLoRA's rank reallocation).
    training_loss: object
    fit_head: object
    on_step: object


class MethodDefaults:
    """What a method declares when it says nothing else; each method class derives from it."""

    tasks: tuple[str, ...] | None = None
    long_text_modes: tuple[str, ...] = ("truncate", "head-tail", "chunk")  # --long-text (where the task reads it)
    trains = True
    tunes_own_weights = False  # trains the model's own weights, not added ones (EWC can protect them)
    settings: tuple = ()
    # A sentence-embedding backbone gets a head on its mean-pooled states; methods that need
    # transformers' own classifier class (PEFT's prompt learning) say False.
    mean_pooling = True
    exportable = True
    # Full fine-tuning's cost: a forward, and a backward that computes gradients for the
    # activations and the weights (about twice the forward).
    relative_cost = 3.0
    training_loss = None
    fit_head = None
    on_step = None

    def check(self, cfg, task) -> None:
        pass

    def lr_for_steps(self, steps: int) -> float:
        return self.default_lr  # one rate, however long the run (LoRA's falls with the steps)

    def search_space(self, lr: float) -> dict:
        """`tunesmith tune`'s space when the config has no `search:` block, around `lr`, the rate
        `train` would choose (plan.learning_rate). The learning rate matters most for every
        method; a range of 4x either side covers where the default goes wrong (too slow on few
        steps, unstable on many). Methods add their own size knob."""
        if not self.trains:
            return {}
        return {"lr": {"low": float(f"{lr / 4:.2g}"), "high": float(f"{lr * 4:.2g}"), "log": True}}


def register_method(method: "Method") -> "Method":
    METHODS[method.name] = method
    return method


def supporting_methods(capability: str) -> list[str]:
    """Names of the registered methods that declare `capability` (a truthy attribute)."""
    return [name for name, method in METHODS.items() if getattr(method, capability)]


def count_parameters(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "trainable_pct": 100.0 * trainable / total}


def load_tuned(task, folder: str):
    """A saved run's model, as every verb loads it: the task's model (safetensors only), with
    what plain transformers drops on load put back by the method that tuned it (bottleneck
    adapters, a prompt encoder). The one place a run's model is loaded, whatever the task."""
    from tunesmith.methods.adapter import adapter_keys_expected, restore_adapters
    from tunesmith.methods.prompt_learning import restore_prompt

    with adapter_keys_expected(folder):
        model = task.load_model(folder)
    return restore_prompt(restore_adapters(model, folder), folder)


from tunesmith.methods import (  # noqa: E402,F401  (they register themselves)
    adalora, adapter, bitfit, embedding, freeze, full, ia3, lora, prompt_learning, qlora)
