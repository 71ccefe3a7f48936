"""Reward functions for `--task rl`: what a completion earns, as a number.

`--reward` names one or several, comma-separated, each with an optional weight after `=`; the
reward of a completion is their weighted sum:

    --reward number                     the final number equals the reference answer: 1, else 0
    --reward number,format=0.2          ... plus 0.2 when the last line reads "Answer: <number>"
    --reward json                       the completion is valid JSON: 1, else 0
    --reward regex=0.5 --reward-pattern '^Yes|^No'   the pattern matches (re.search): 1, else 0
    --reward number,length=0.1          ... minus 0.1 x the share of max_new_tokens used
    --reward runs/rm                    a reward-model run's score of (prompt, completion)
    --reward my_rewards.py:score        a Python function of the user's (below)

A user's function is named explicitly on the command line (nothing is imported otherwise) and is
called as TRL calls its reward functions: `score(prompts, completions, answers) -> list[float]`
with lists of equal length (`answers`: the rows' reference answers, "" where none). It runs in
the training process with the user's rights, like any code of theirs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunesmith.errors import UserError

BUILTIN = ("number", "format", "json", "regex", "length")
FORMAT = r"Answer:\s*-?[\d,]*\.?\d+\s*$"  # the last line as data/arithmetic.py's instruction asks
NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


@dataclass(frozen=True)
class Reward:
    """One named reward and its weight; `score(prompts, completions, answers) -> list[float]`."""

    name: str
    weight: float
    score: Callable


def parse(spec: str) -> list[tuple[str, float]]:
    """`--reward`'s value as (name, weight) pairs; one error naming the bad part."""
    parts = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            raise UserError(f"--reward {spec}: an empty entry; separate rewards with single commas")
        name, _, weight = part.rpartition("=") if "=" in part else (part, "", "1")
        try:
            value = float(weight)
        except ValueError:
            raise UserError(f"--reward {part}: the weight after '=' must be a number (e.g. format=0.2)") from None
        if not math.isfinite(value):
            raise UserError(f"--reward {part}: the weight must be a finite number")
        parts.append((name.strip(), value))
    return parts


def final_number(text: str) -> float | None:
    """The number a completion ends on: after its last "Answer:" when it has one, else its last number."""
    tail = text.rsplit("Answer:", 1)[-1]
    found = NUMBER.findall(tail)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", "").rstrip("."))
    except ValueError:
        return None


def number(prompts, completions, answers) -> list[float]:
    scores = []
    for completion, answer in zip(completions, answers):
        got, wanted = final_number(completion), final_number(str(answer))
        scores.append(float(got is not None and wanted is not None and abs(got - wanted) < 1e-6))
    return scores


def valid_json(prompts, completions, answers) -> list[float]:
    scores = []
    for completion in completions:
        text = completion.strip()
        if text.startswith("```"):  # a fenced block: its inside
            text = text.strip("`").removeprefix("json").strip()
        try:
            json.loads(text)
            scores.append(1.0)
        except ValueError:
            scores.append(0.0)
    return scores


def pattern_match(pattern: str) -> Callable:
    compiled = re.compile(pattern, re.MULTILINE)
    return lambda prompts, completions, answers: [float(compiled.search(c.strip()) is not None) for c in completions]


def length_penalty(tokenizer, max_new_tokens: int) -> Callable:
    def score(prompts, completions, answers) -> list[float]:
        return [-min(1.0, len(tokenizer(c, add_special_tokens=False)["input_ids"]) / max_new_tokens) for c in completions]
    return score


def user_function(ref: str) -> Callable:
    """`file.py:name`: the function `name` from the Python file, loaded once."""
    path, _, name = ref.rpartition(":")
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--reward {ref}: no such file {path}")
    spec = importlib.util.spec_from_file_location(f"tunesmith_reward_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: say where it failed
        raise UserError(f"--reward {ref}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise UserError(f"--reward {ref}: {path} has no function {name}")
    return checked(function, ref)


def checked(function: Callable, name: str) -> Callable:
    """A reward function whose answers are verified: one finite number per completion."""
    def score(prompts, completions, answers) -> list[float]:
        values = list(function(prompts=prompts, completions=completions, answers=answers))
        if len(values) != len(completions):
            raise UserError(f"--reward {name}: returned {len(values)} rewards for {len(completions)} completions")
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError):
            raise UserError(f"--reward {name}: returned a reward that is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise UserError(f"--reward {name}: returned NaN or an infinite reward")
        return values
    return score


def reward_model(path: str) -> Callable:
    """A reward-model run (`--task reward-model`): its score of each (prompt, completion) pair.
    Read from the run folder with the reward-model task's own loader (safetensors only): its
    methods (full, LoRA merged on save) leave a plain one-output classifier there."""
    import yaml

    from tunesmith import models
    from tunesmith.tasks import TASKS
    from tunesmith.tasks.reward_model import prompt_text

    run, folder = Path(path), Path(path) / "model"
    settings = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) if (run / "config.yaml").is_file() else None
    if not isinstance(settings, dict) or not (folder / "config.json").is_file():
        raise UserError(f"--reward {path}: not a finished tunesmith run (no config.yaml or model/)")
    if settings.get("task") != "reward-model":
        raise UserError(f"--reward {path}: a {settings.get('task')} run; give a reward-model run folder "
                        "(tunesmith train PAIRS --task reward-model)")
    task = TASKS["reward-model"]
    model, tokenizer = task.load_model(str(folder)).eval(), models.load_tokenizer(str(folder))
    max_length = int(settings.get("max_length") or task.default_max_length)

    def score(prompts, completions, answers) -> list[float]:
        pairs = [(prompt_text(p), c) for p, c in zip(prompts, completions)]
        features = task.encode(tokenizer, pairs, None, [], max_length, use_cache=False)
        return [float(s) for s in task.predict(model, features)]
    return score


def build(spec: str, pattern: str | None, tokenizer, max_new_tokens: int) -> list[Reward]:
    """The rewards `--reward` names, ready to score."""
    rewards = []
    for name, weight in parse(spec):
        if name == "number":
            score = number
        elif name == "format":
            score = pattern_match(FORMAT)
        elif name == "json":
            score = valid_json
        elif name == "regex":
            if not pattern:
                raise UserError("--reward regex: give the pattern with --reward-pattern")
            try:
                score = pattern_match(pattern)
            except re.error as exc:
                raise UserError(f"--reward-pattern {pattern}: not a regular expression ({exc})") from None
        elif name == "length":
            score = length_penalty(tokenizer, max_new_tokens)
        elif ":" in name and name.rpartition(":")[0].endswith(".py"):
            score = user_function(name)
        elif Path(name).is_dir():
            score = reward_model(name)
        else:
            raise UserError(f"--reward {name}: not a reward; use one of {', '.join(BUILTIN)}, a reward-model run "
                            "folder, or file.py:function")
        rewards.append(Reward(name, weight, score))
    return rewards


def score_all(rewards: list[Reward], prompts: list, completions: list[str], answers: list[str]) -> dict[str, list[float]]:
    """Each reward's values, and their weighted sum under "reward"."""
    values = {r.name: r.score(prompts, completions, answers) for r in rewards}
    values["reward"] = [sum(r.weight * values[r.name][i] for r in rewards) for i in range(len(completions))]
    return values


def means(rewards: list[Reward], scored: dict[str, list[float]]) -> dict[str, float]:
    """Each reward's mean, keyed reward_<name> for the built-ins and reward_<position> for a
    run folder or a user's function (whose names are paths)."""
    count = max(1, len(scored["reward"]))
    return {f"reward_{r.name if r.name in BUILTIN else i}": sum(scored[r.name]) / count for i, r in enumerate(rewards)}
