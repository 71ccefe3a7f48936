"""A run's settings, resolved once.

`resolve(cfg, splits)` turns the validated settings plus facts about the data into a `Plan`:
the same `TrainConfig` with every derived default filled in (model, learning rate, passes, max
length, metric, the second text column) and, for each default chosen, the one line that says
why. The config is frozen, so nothing can change a setting afterwards: every stage of a run,
`compare`'s runs, `tune`'s trials, `auto`'s rungs and the run folder's config.yaml read the same
values. Each rule below is the one place its default is stated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from tunesmith import models
from tunesmith.config import TrainConfig
from tunesmith.methods import METHODS
from tunesmith.tasks import TASKS

# The task's default passes (3 for most), raised on small data so that training takes at least
# the task's `min_default_steps` optimizer steps (three passes over 320 rows are 30 steps, too
# few for a head and an adapter to settle). Capped so tiny data does not train for ever.
MAX_DEFAULT_EPOCHS = 10.0


@dataclass(frozen=True)
class Plan:
    """The resolved settings of one run, and why each derived default is what it is."""

    settings: TrainConfig  # every default filled in; frozen
    source: str  # where the model's weights load from (a folder or Hub id)
    position_limit: int | None  # the most tokens the model reads (None: no such limit)
    reasons: dict[str, str] = field(default_factory=dict)  # setting -> the line that says why
    notes: dict[str, str] = field(default_factory=dict)  # the reasons worth telling (a default the data moved)

    def summary(self) -> str:
        """One line: each resolved setting and why ("given": the user set it)."""
        parts = [f"{key} {getattr(self.settings, key):g} ({why})" if isinstance(getattr(self.settings, key), float)
                 else f"{key} {getattr(self.settings, key)} ({why})" for key, why in self.reasons.items()]
        return "plan: " + "; ".join(parts)

    def with_batch(self, batch_size: int, grad_accum: int, note: str) -> "Plan":
        """The same plan with a smaller micro-batch (the same effective batch) that fits memory."""
        settings = settings_with(self.settings, batch_size=batch_size, grad_accum=grad_accum)
        return replace(self, settings=settings, reasons={**self.reasons, "batch_size": "fits the memory available"},
                       notes={**self.notes, "batch_size": note})


def settings_with(cfg: TrainConfig, **values) -> TrainConfig:
    """A new, validated config: `cfg` with `values` changed (a config is never edited in place)."""
    return TrainConfig(**{**cfg.model_dump(), **values})


def steps_per_epoch(cfg: TrainConfig, train_rows: int) -> int:
    """Optimizer steps in one pass over `train_rows` examples (the last batch may be short)."""
    return math.ceil(math.ceil(train_rows / cfg.batch_size) / cfg.grad_accum)


def epochs(cfg: TrainConfig, train_rows: int) -> float:
    """--epochs, else the task's default passes raised to make its `min_default_steps` steps (at
    most MAX_DEFAULT_EPOCHS)."""
    if cfg.epochs is not None:
        return cfg.epochs
    task = TASKS[cfg.task]
    passes = math.ceil(task.min_default_steps / max(1, steps_per_epoch(cfg, train_rows)))
    return float(min(MAX_DEFAULT_EPOCHS, max(task.default_epochs, passes)))


def training_steps(cfg: TrainConfig, train_rows: int) -> int:
    """Optimizer steps of the whole run over `train_rows` examples."""
    return math.ceil(steps_per_epoch(cfg, train_rows) * epochs(cfg, train_rows))


def learning_rate(cfg: TrainConfig, train_rows: int | None) -> float:
    """--lr, else the task's rate for this method and model (NER's, a CNN's), else the
    method's: for a run over `train_rows` where the task allows it, the method's rate for that
    many optimizer steps (LoRA: larger on short runs), else its one default."""
    if cfg.lr is not None:
        return cfg.lr
    task, method = TASKS[cfg.task], METHODS[cfg.method]
    task_lr = task.default_lr(cfg.method, cfg.resolved_model())
    if task_lr is not None:
        return task_lr
    if train_rows is not None and task.lr_by_steps:
        return method.lr_for_steps(training_steps(cfg, train_rows))
    return method.default_lr


def resolve(cfg: TrainConfig, splits, start_model: str | None = None) -> Plan:
    """The plan of a run of `cfg` on `splits`. `start_model`: the folder continual learning
    starts from (it replaces the task's default model)."""
    rows = len(splits.train)
    given = cfg.model_fields_set  # what the user (or the task's defaults) set, before anything is filled in
    reasons: dict[str, str] = {}
    notes: dict[str, str] = {}

    model, why = choose_model(cfg, splits, start_model)
    reasons["model"] = why
    if why.startswith("model: "):  # the data chose it: say so
        notes["model"] = why
    cfg = settings_with(cfg, model=model, text_pair_col=cfg.text_pair_col or splits.pair_col)

    passes = epochs(cfg, rows)
    raised = cfg.epochs is None and passes != TASKS[cfg.task].default_epochs
    task_epochs = TASKS[cfg.task].train_defaults.get("epochs")
    reasons["epochs"] = ("the task's default" if cfg.epochs == task_epochs else "given") if cfg.epochs is not None else (
        f"so that {rows:,} training rows make at least {TASKS[cfg.task].min_default_steps} optimizer steps" if raised
        else "the task's default")
    if raised:
        notes["epochs"] = f"epochs: {passes:g}, {reasons['epochs']} (--epochs sets it)"
    cfg = settings_with(cfg, epochs=passes)

    rate = learning_rate(cfg, rows)
    by_steps = cfg.lr is None and TASKS[cfg.task].lr_by_steps and rate != METHODS[cfg.method].default_lr
    reasons["lr"] = _lr_reason(cfg, rows, by_steps)
    if by_steps:  # the data moved it off the method's default: say so
        notes["lr"] = f"lr: {rate:.2g}, {reasons['lr']} (--lr sets it)"
    cfg = settings_with(cfg, lr=rate)

    source = models.resolve(model)
    limit = models.position_limit(source)
    max_length, length_note = models.max_length_for(cfg, limit)
    reasons["max_length"] = length_note or ("given" if cfg.max_length else "the task's default")
    reasons["batch_size"] = _batch_reason(cfg, given)
    if length_note:
        notes["max_length"] = length_note
    cfg = settings_with(cfg, max_length=max_length)
    planned = TASKS[cfg.task].planned(cfg, splits, source)  # what only this task's data decides
    metric, reasons["metric"] = planned.pop("metric", (cfg.resolved_metric(),
                                                       "given" if cfg.metric else "the task's default"))
    if reasons["metric"] not in ("given", "the task's default"):
        notes["metric"] = f"metric: {metric}, {reasons['metric']} (--metric sets it)"
    cfg = settings_with(cfg, metric=metric)
    for key, (value, why) in planned.items():
        reasons[key] = why
        if why != "given" and value != getattr(cfg, key):
            notes[key] = f"{key}: {value}, {why} (--{key.replace('_', '-')} sets it)"
    return Plan(settings_with(cfg, **{key: value for key, (value, _) in planned.items()}), source, limit, reasons,
                notes)


def choose_model(cfg: TrainConfig, splits, start_model: str | None = None) -> tuple[str, str]:
    """The model a run of `cfg` on `splits` tunes, and why: the start of continual learning,
    else --model, else the multilingual model for text mostly in another script, else the
    task's default."""
    if start_model is not None:
        return start_model, "the earlier run's model (continual learning starts from it)"
    if cfg.model is not None:
        return cfg.model, "given"
    task = TASKS[cfg.task]
    chosen = models.multilingual_choice(task, splits.train.texts)
    if chosen is not None:
        return models.MULTILINGUAL, chosen
    return task.default_model, "the task's default"


def _batch_reason(cfg: TrainConfig, given: set) -> str:
    task_default = TASKS[cfg.task].train_defaults.get("batch_size")
    if task_default is not None and cfg.batch_size == task_default:
        return "the task's default"
    return "given" if "batch_size" in given else "the default"


def _lr_reason(cfg: TrainConfig, rows: int, by_steps: bool) -> str:
    if cfg.lr is not None:
        return "given"
    if by_steps:
        return f"{cfg.method}'s rate for {training_steps(cfg, rows):,} optimizer steps"
    if TASKS[cfg.task].default_lr(cfg.method, cfg.model) is not None:
        return f"{cfg.task}'s rate for {cfg.method}"
    return f"{cfg.method}'s default"
