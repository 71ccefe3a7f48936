"""Alert rules, read from YAML (never executed), and their evaluation per topic and window.

    window: 1h                 # the time window counts are kept per (aligned to UTC)
    rules:
      - name: mostly-negative
        kind: threshold        # the window's share of negative texts at or above a level
        share_negative: 0.6
        min_volume: 20         # fewer texts than this in the window say nothing
        cooldown: 6h           # after an alert, the same rule and topic stay quiet this long
      - name: negative-surge
        kind: surge            # negative texts far above the topic's own recent windows
        z: 3.0                 # standard deviations above the baseline's mean
        baseline: 24           # windows before this one that make the baseline
        min_volume: 20
        cooldown: 6h

A surge compares the window's count of negative texts with the same topic's previous
`baseline` windows (empty ones count as 0, from the topic's first text on): z = (count -
mean) / spread, where the spread is at least sqrt(mean) and at least 1 (a Poisson floor, so a
topic that was quiet and steady does not alert on two texts). A window is checked every time
it gains texts, so an alert can fire before the window closes; each rule fires at most once
per topic and window. Event time (the texts' own timestamps) drives windows and cool-downs, so
a replay alerts exactly as the live stream did.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunesmith.durations import parse_duration
from tunesmith.errors import UserError

MIN_BASELINE = 3  # windows of history a surge needs before it can say "far above"


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["threshold", "surge"]
    share_negative: float | None = Field(None, gt=0, le=1, description="threshold: the negative share that alerts")
    z: float = Field(3.0, gt=0, description="surge: standard deviations above the baseline")
    baseline: int = Field(24, ge=MIN_BASELINE, description="surge: windows before this one that make the baseline")
    min_volume: int = Field(20, ge=1)
    cooldown: str = "6h"


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: str = "1h"
    rules: list[Rule]

    @property
    def window_s(self) -> float:
        return parse_duration(self.window, "rules window:")

    @property
    def history_s(self) -> float:
        """Event time the rules look back over: the current window and the longest surge baseline."""
        return self.window_s * (1 + max((r.baseline for r in self.rules if r.kind == "surge"), default=0))


DEFAULT = Rules(rules=[Rule(name="mostly-negative", kind="threshold", share_negative=0.6),
                       Rule(name="negative-surge", kind="surge")])


def load_rules(path: str | None) -> Rules:
    if path is None:
        return DEFAULT
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        rules = Rules.model_validate(raw)
    except FileNotFoundError:
        raise UserError(f"--rules {path}: not found") from None
    except yaml.YAMLError as exc:
        raise UserError(f"--rules {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"--rules {path}: {where}: {first['msg']}") from None
    for rule in rules.rules:
        if rule.kind == "threshold" and rule.share_negative is None:
            raise UserError(f"--rules {path}: rule {rule.name}: a threshold rule needs share_negative (e.g. 0.6)")
        parse_duration(rule.cooldown, f"--rules {path}: rule {rule.name}: cooldown")
    if len({r.name for r in rules.rules}) != len(rules.rules):
        raise UserError(f"--rules {path}: two rules share a name; each needs its own")
    rules.window_s  # refuses a bad window now
    return rules


def evaluate(rules: Rules, store, touched: set[tuple[str, float]]) -> list[dict]:
    """The alerts that the windows touched by a batch now trigger (not yet stored)."""
    size = rules.window_s
    windows = sorted({(topic, math.floor(t / size) * size) for topic, t in touched}, key=lambda w: (w[1], w[0]))
    fired = []
    for topic, start in windows:
        stats = store.window(topic, start, start + size)
        for rule in rules.rules:
            if stats.count < rule.min_volume or store.alerted(rule.name, topic, start):
                continue
            last = store.last_alert(rule.name, topic, start)
            if last is not None and start - last < parse_duration(rule.cooldown):
                continue
            verdict = _threshold(rule, stats) if rule.kind == "threshold" else _surge(rule, store, topic, start, size, stats)
            if verdict is None:
                continue
            why, facts = verdict
            alert = {"rule": rule.name, "kind": rule.kind, "topic": topic, "window_start": start,
                     "window_end": start + size, "why": why,
                     "facts": {"count": stats.count, "negatives": stats.negatives, "share_negative": round(stats.share, 4),
                               "mean_score": round(stats.mean_score, 4), **facts},
                     "evidence": store.most_negative(topic, start, start + size)}
            store.add_alert(alert)  # in the batch's transaction: the next window sees its cool-down
            fired.append(alert)
    return fired


def _threshold(rule: Rule, stats) -> tuple[str, dict] | None:
    if stats.share < rule.share_negative:
        return None
    return (f"{stats.negatives} of {stats.count} texts negative ({stats.share:.0%}), at or above "
            f"{rule.share_negative:.0%}", {})


def _surge(rule: Rule, store, topic: str, start: float, size: float, stats) -> tuple[str, dict] | None:
    first = store.first_time(topic)
    earliest = max(start - rule.baseline * size, math.floor(first / size) * size)
    history = [store.window(topic, w, w + size).negatives
               for w in _starts(earliest, start, size)]
    if len(history) < MIN_BASELINE:
        return None
    mean = sum(history) / len(history)
    std = math.sqrt(sum((h - mean) ** 2 for h in history) / len(history))
    spread = max(std, math.sqrt(mean), 1.0)
    z = (stats.negatives - mean) / spread
    if z < rule.z:
        return None
    return (f"{stats.negatives} negative texts against {mean:.1f} ± {std:.1f} per window over the previous "
            f"{len(history)} windows (z {z:.1f}, at or above {rule.z:g})",
            {"baseline_mean": round(mean, 3), "baseline_std": round(std, 3), "z": round(z, 3),
             "baseline_windows": len(history)})


def _starts(first: float, stop: float, size: float) -> list[float]:
    count = int(round((stop - first) / size))
    return [first + k * size for k in range(max(0, count))]
