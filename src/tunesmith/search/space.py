"""The search space: which training keys a study varies, and over what.

A config's `search:` block maps training keys to a range or a list of choices:

    search:
      lr: {low: 1.0e-5, high: 1.0e-3, log: true}   # a float range, sampled on a log scale
      epochs: {low: 1, high: 4}                       # integers when low and high are
      warmup_ratio: {low: 0.0, high: 0.2, step: 0.05}
      lora_r: [4, 8, 16, 32]                          # choices
      method: [lora, adapter, full]                   # any training key, the method too

A key that the chosen method does not read (lora_r when a trial picks `adapter`) is simply not
suggested in that trial, so one study can search across methods. With no `search:` block the
method declares its own space (`search_space(cfg)` on the method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tunesmith.errors import UserError

# What a search may not vary: the data and how it is split (every trial must be selected on
# the same validation split and the winner scored on the same test split, so the seed, which
# draws the splits, is fixed too), the task and metric (trials would not be comparable), and
# where runs are written.
NOT_SEARCHABLE = ("output", "name", "resume", "from_run", "config_version", "metric", "seed")


@dataclass(frozen=True)
class Param:
    """One searched key: a range (low, high, log, step) or a list of choices."""

    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in (self.low, self.high) + ((self.step,) if self.step else ()))

    def suggest(self, trial) -> Any:
        """This parameter's value in an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list:
        """Every value the grid sampler tries: the choices, or the range in its steps."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None:
            raise UserError(f"search: {self.name}: --sampler grid needs choices or a step for every key "
                            f"(give {self.name}: {{low: {self.low}, high: {self.high}, step: ...}} or a list)")
        count = int(round((self.high - self.low) / self.step)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return values if self.is_int else [round(v, 12) for v in values]


def parse_space(block: Any, source: str) -> dict[str, Param]:
    """The `search:` block as Params, or one clear error naming the key and what to write."""
    from tunesmith.config import DataSettings, TrainConfig

    if not isinstance(block, dict) or not block:
        raise UserError(f"{source}: 'search' must map training keys to ranges or choices, "
                        "like 'search: {lr: {low: 1.0e-5, high: 1.0e-3, log: true}, lora_r: [4, 8, 16]}'")
    space = {}
    for name, spec in block.items():
        where = f"{source}: search.{name}"
        if name not in TrainConfig.model_fields:
            raise UserError(f"{where}: not a training key; see `tunesmith train --help` for the keys")
        if name in NOT_SEARCHABLE or name in DataSettings.model_fields:
            raise UserError(f"{where}: cannot be searched (trials must share their data, task, metric and folders)")
        space[name] = _param(name, spec, where)
    return space


def _param(name: str, spec: Any, where: str) -> Param:
    if isinstance(spec, list):
        if not spec:
            raise UserError(f"{where}: the list of choices is empty")
        return Param(name, choices=tuple(spec))
    if not isinstance(spec, dict):
        raise UserError(f"{where}: give a list of choices or a range {{low: ..., high: ...}}, not {spec!r}")
    unknown = set(spec) - {"low", "high", "log", "step"}
    if unknown:
        raise UserError(f"{where}: unknown {', '.join(sorted(unknown))}; a range has low, high, log and step")
    if "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: a range needs both low and high")
    low, high, step = (_number(spec.get(k), f"{where}.{k}") for k in ("low", "high", "step"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}.log: true or false, not {log!r}")
    if not low < high:
        raise UserError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise UserError(f"{where}: a log-scale range needs low > 0")
    if step is not None and (step <= 0 or (log and not isinstance(step, int))):
        raise UserError(f"{where}: step must be positive (and log-scale ranges take no fractional step)")
    return Param(name, low=low, high=high, log=log, step=step)


def _number(value: Any, where: str) -> float | int | None:
    # YAML reads 1e-5 (no dot) as a string: accept it as the number the user meant.
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {value!r} is not a number") from None


def suggest(trial, space: dict[str, Param], base: dict[str, Any]) -> dict[str, Any]:
    """A trial's training values: `base` with the searched keys set. The method and task are
    suggested first, so keys their sections do not read are left out of this trial."""
    from tunesmith.config import unread_sections

    values = dict(base)
    first = [name for name in ("method",) if name in space]
    for name in first:
        values[name] = space[name].suggest(trial)
    unread = unread_sections(values.get("task", "text-classification"), values.get("method", "lora"))
    values = {k: v for k, v in values.items() if k not in unread}  # e.g. the base's lora_r in an adapter trial
    for name, param in space.items():
        if name not in first and name not in unread:
            values[name] = param.suggest(trial)
    return values


def grid(space: dict[str, Param]) -> dict[str, list]:
    """The grid sampler's search space: every key's values."""
    return {name: param.grid() for name, param in space.items()}


def grid_size(space: dict[str, Param]) -> int:
    return math.prod(len(values) for values in grid(space).values())


def default_space(cfg, train_rows: int | None = None) -> dict[str, Param]:
    """The method's own space for this config and `train_rows` training examples (see
    `search_space` on the methods)."""
    from tunesmith.methods import METHODS
    from tunesmith.plan import learning_rate

    block = METHODS[cfg.method].search_space(learning_rate(cfg, train_rows))
    if not block:
        raise UserError(f"tune: method {cfg.method} trains nothing, so there is nothing to search; "
                        "give a `search:` block (e.g. over the method) or choose a method that trains")
    return {name: _param(name, spec, f"method {cfg.method}'s default space: {name}") for name, spec in block.items()}
