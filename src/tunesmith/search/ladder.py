"""`tunesmith auto`: climb from the cheapest model to the dearest, and stop at good enough.

The rungs, cheapest first: zero-shot (label names, no training), few-shot (small data),
freeze (a head on frozen features, starting from the linear probe), adapter, lora, full, an
ensemble of the best two or three trained rungs (no training: their outputs averaged, at their
serving cost together), and a short `tune` of the best single rung with whatever budget is left; each method declares its place
(LADDER, with when each applies) and its cost (the method's `relative_cost`). Before each rung its time is
estimated (a calibrated forward pass, times the method's relative cost, times the examples it
sees); a rung that would overrun the budget is skipped, except the dearest trained rung (full),
which instead trains for the passes the time left affords: on large data a short budget is
better spent on part of a pass of the strongest method than on nothing. After each rung the
estimates are corrected by how far off the last one was. The climb stops at the first rung
whose validation metric meets the target; with none, the best on validation is kept, an
ensemble only where it beats the best single rung by more than validation's noise. A climb
that was stopped (Ctrl-C, a crash) continues from the rungs it finished (`earlier`): they are
kept as they were, and their time, with the time spent in the rung that was training at the
stop (`unfinished_s`), counts against the budget. Everything here is plain logic over injected
functions (training, the clock), so a test can drive it with a fake clock.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field, replace
from typing import Callable

from tunesmith.errors import UserError

OVERHEAD_S = 15.0  # loading, encoding, saving the model: measured ~10-20 s for MiniLM on 2 cores
# The dearest rung is shortened rather than skipped when at least this much of a pass fits: part
# of a pass of full fine-tuning already buys most of its gain on large data (docs/benchmarks.md,
# "`tunesmith auto` on SST-2").
MIN_PASSES = 0.25
SAFETY = 0.9  # a shortened rung plans to use 90% of the time left: estimates are estimates

# The ensemble rung averages at most this many trained rungs, the best on validation first: a
# third member still helped on SST-2, and each one adds its serving cost.
MAX_MEMBERS = 3

OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class Target:
    """A goal on a validation metric, e.g. "macro_f1>=0.9"."""

    metric: str
    op: str
    value: float

    def met(self, value: float | None) -> bool:
        return value is not None and OPERATORS[self.op](value, self.value)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_target(text: str, known_metrics: dict[str, bool]) -> Target:
    match = re.fullmatch(r"\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*([0-9.eE+-]+)\s*", text or "")
    if not match:
        raise UserError(f"--target {text!r}: write it like \"macro_f1>=0.9\" (a metric, >= > <= or <, a number)")
    metric, op, number = match.groups()
    if metric not in known_metrics:
        raise UserError(f"--target {text}: {metric} is not a metric of this task; choose one of: "
                        f"{', '.join(known_metrics)}")
    try:
        return Target(metric, op, float(number))
    except ValueError:
        raise UserError(f"--target {text}: {number!r} is not a number") from None


@dataclass(frozen=True)
class Rung:
    name: str  # what the table calls it: the method, or "tune <method>"
    method: str
    cost: float = 3.0  # one training example in forward passes (the method's relative_cost)
    tune: bool = False  # the last rung: a search around the best method so far
    ensemble: bool = False  # the trained rungs so far, averaged (no training of its own)
    passes: float | None = None  # set when the budget shortened the rung: its training passes

    @property
    def trains(self) -> bool:
        """It trains one model of its own (not zero-shot, the ensemble or the search)."""
        return self.cost > 0 and not self.tune and not self.ensemble


@dataclass
class Outcome:
    """What one rung did: its validation metric, time and size, or why it did not run."""

    rung: Rung
    status: str  # "done", "skipped" (budget), "failed" (refused by the method or data)
    seconds: float = 0.0
    estimate_s: float = 0.0
    value: float | None = None
    trainable_pct: float | None = None
    size_mb: float | None = None
    run: str | None = None
    note: str = ""


@dataclass
class Data:
    """What the ladder needs to know about the data to plan and cost its rungs."""

    train: int
    val: int
    labels: int
    named_labels: bool  # labels are words (zero-shot can read them), not ids
    epochs: float


# auto's rungs, cheapest first: each a method and when it applies to the data. Zero-shot
# embeds the label names, so ids like "3" say nothing to it; few-shot (SetFit) is for its own
# regime of a few rows per class, where the other rungs learn little.
FEW_SHOT_ROWS_PER_CLASS = 64
LADDER: tuple[tuple[str, Callable[[Data], bool]], ...] = (
    ("zero-shot", lambda data: data.named_labels),
    ("few-shot", lambda data: data.train <= FEW_SHOT_ROWS_PER_CLASS * data.labels),
    ("freeze", lambda data: True),
    ("adapter", lambda data: True),
    ("lora", lambda data: True),
    ("full", lambda data: True),
)


def plan(task: str, methods: dict, data: Data, ensemble: bool = False) -> list[Rung]:
    """The rungs of LADDER that apply to this task and data (a registered method for the
    task), then the ensemble rung where the task's outputs can be averaged (`ensemble`), and
    the tune rung last. A rung's cost is its method's `relative_cost`."""
    from tunesmith.tasks import TASKS

    allowed = TASKS[task].methods if task in TASKS else None
    rungs = [Rung(name, name, methods[name].relative_cost) for name, applies in LADDER
             if name in methods and (methods[name].tasks is None or task in methods[name].tasks)
             and (allowed is None or name in allowed) and applies(data)]
    return rungs + ([Rung("ensemble", "", 0.0, ensemble=True)] if ensemble else []) + [Rung("tune", "", tune=True)]


def estimate_seconds(rung: Rung, data: Data, forward_s: float) -> float:
    """Seconds a rung should take: its training passes in forward-pass units, plus the
    evaluations (one forward over val per epoch) and the probe fit (one forward over train)."""
    passes = data.epochs if rung.passes is None else rung.passes
    training = rung.cost * data.train * passes
    evaluating = data.val * max(1.0, passes) + data.train  # validation passes, and the probe's features
    return OVERHEAD_S + forward_s * (training + evaluating)


def passes_within(rung: Rung, data: Data, forward_s: float, seconds: float) -> float:
    """The training passes `rung` can make in `seconds` (estimate_seconds solved for the passes;
    at least one validation pass is paid for either way)."""
    fixed = OVERHEAD_S + forward_s * (data.val + data.train)
    per_pass = forward_s * rung.cost * data.train
    return max(0.0, (seconds - fixed) / per_pass) if per_pass > 0 else 0.0


@dataclass
class Ladder:
    """The climb. `run(rung, seconds_left)` trains one rung and returns its Outcome (status
    "done" or "failed"); `clock()` reads seconds; `log` prints."""

    rungs: list[Rung]
    metric: str  # the validation metric the rungs report (the target's, when there is one)
    data: Data
    forward_s: float
    budget_s: float | None
    target: Target | None
    higher_better: bool
    run: Callable[[Rung, float | None], Outcome]
    clock: Callable[[], float]
    log: Callable[[str], None] = print
    min_tune_trials: int = 2
    # Rungs a stopped climb finished, by name: kept as they were, their seconds spent already.
    earlier: dict[str, Outcome] = field(default_factory=dict)
    # Seconds a stopped climb spent outside the rungs it finished: the rung training at the stop,
    # which continues from its checkpoint but whose Outcome times only the part after it.
    unfinished_s: float = 0.0
    _started: float | None = field(default=None, init=False, repr=False)  # the clock at the budget's start
    _correction: float = field(default=1.0, init=False, repr=False)  # measured / estimated time of the last rung
    record: Callable[[Outcome], None] = lambda outcome: None  # sees each rung that finished (done or failed)
    outcomes: list[Outcome] = field(default_factory=list)

    def climb(self) -> list[Outcome]:
        """Each rung in turn, within the budget, until one meets the target; the outcomes."""
        self._started = self.clock() - sum(o.seconds for o in self.earlier.values()) - self.unfinished_s
        trained = [r for r in self.rungs if r.trains]
        dearest = trained[-1] if trained else None
        for rung in self.rungs:
            if rung.tune:
                best = self.best(single=True)
                if best is None or best.rung.cost == 0:
                    continue  # nothing trained to search around (zero-shot: no training cost)
                rung = Rung(f"tune {best.rung.method}", best.rung.method, best.rung.cost, tune=True)
            outcome = self._replay(rung) if rung.name in self.earlier else self._attempt(rung, rung is dearest)
            if outcome is not None and self.target is not None and self.target.met(outcome.value):
                if rung.name not in self.earlier:
                    self.log(f"{rung.name} meets the target {self.target}: stopping here")
                break
        return self.outcomes

    def _replay(self, rung: Rung) -> Outcome:
        """A rung a stopped climb finished: kept as it was; its time corrects the estimates."""
        outcome = self.earlier[rung.name]
        self.outcomes.append(outcome)
        if outcome.status == "done" and rung.trains:
            self._correction = _correction(outcome.seconds, estimate_seconds(outcome.rung, self.data, self.forward_s))
        self.log(f"{rung.name}: {outcome.status} before the stop"
                 + (f" (val {self.metric} {outcome.value:.4f})" if outcome.value is not None else ""))
        return outcome

    def _estimate(self, rung: Rung) -> float:
        """Seconds `rung` should take, corrected by how the last rung's estimate turned out."""
        if rung.ensemble:  # no training: each member predicts the validation rows once
            return (OVERHEAD_S + self.forward_s * self.data.val * len(self.members())) * self._correction
        if rung.tune:  # a trial costs about what the rung it searches around cost
            return self.best(single=True).seconds * self.min_tune_trials
        return estimate_seconds(rung, self.data, self.forward_s) * self._correction

    def _attempt(self, rung: Rung, dearest: bool) -> Outcome | None:
        """Run `rung` if it fits the budget left (the dearest trained rung shortened to fit);
        its outcome when it finished, None when it was skipped or failed."""
        if rung.ensemble and len(self.members()) < 2:
            return None  # fewer than two trained rungs finished: nothing to average
        left = None if self.budget_s is None else self.budget_s - (self.clock() - self._started)
        estimate = self._estimate(rung)
        if left is not None and estimate > left and dearest:
            passes = min(self.data.epochs,
                         passes_within(rung, self.data, self.forward_s, SAFETY * left / self._correction))
            if passes >= MIN_PASSES:
                self.log(f"{rung.name}: {self.data.epochs:g} passes would take {estimate:.0f} s; "
                         f"{passes:.2f} fit in the {left:.0f} s left")
                rung = replace(rung, passes=round(passes, 3))
                estimate = self._estimate(rung)
        if left is not None and estimate > left:
            self.outcomes.append(Outcome(rung, "skipped", estimate_s=estimate,
                                         note=f"estimated {estimate:.0f} s, {max(left, 0):.0f} s left"))
            self.log(f"{rung.name}: skipped (estimated {estimate:.0f} s; {max(left, 0):.0f} s of the budget left)")
            return None
        outcome = self._run(rung, left, estimate)
        if outcome.status != "done":
            self.log(f"{rung.name}: {outcome.status}: {outcome.note}")
            return None
        if rung.trains:
            self._correction = _correction(outcome.seconds, estimate / self._correction)
        self.log(f"{rung.name}: val {self.metric} {outcome.value:.4f} in {outcome.seconds:.0f} s")
        if rung.ensemble and (kept := self.best()) is not outcome:  # best() says why not
            self.log(f"{rung.name}: not clearly better than {kept.rung.name} alone ({kept.value:.4f}: "
                     f"within the noise of {self.data.val:,} validation rows), which serves at a fraction "
                     "of its cost; the ensemble is not kept")
        return outcome

    def _run(self, rung: Rung, left: float | None, estimate: float) -> Outcome:
        """The rung run and timed, its outcome recorded."""
        doing = f"averaging {', '.join(o.rung.name for o in self.members())}" if rung.ensemble else "training"
        self.log(f"{rung.name}: {doing} (estimated {estimate:.0f} s)")
        at = self.clock()
        outcome = self.run(rung, left)
        outcome.seconds, outcome.estimate_s = self.clock() - at, estimate
        if rung.passes is not None:
            outcome.note = f"{rung.passes:g} of {self.data.epochs:g} passes (shortened to the budget)"
        self.outcomes.append(outcome)
        self.record(outcome)
        return outcome

    def members(self) -> list[Outcome]:
        """The ensemble rung's members: the finished trained rungs (not zero-shot, which trains
        nothing, nor an ensemble), best on validation first, at most MAX_MEMBERS."""
        trained = [o for o in self.outcomes if o.status == "done" and o.value is not None and o.run and o.rung.trains]
        return sorted(trained, key=lambda o: o.value, reverse=self.higher_better)[:MAX_MEMBERS]

    def spent_s(self) -> float:
        """Seconds of the budget this climb has spent, counting a stopped climb's before it."""
        if self._started is None:  # not climbing yet
            return self.unfinished_s + sum(o.seconds for o in self.earlier.values())
        return self.clock() - self._started

    def best(self, single: bool = False) -> Outcome | None:
        """The rung to keep: the first (cheapest) that met the target, else the best on
        validation, where an ensemble must beat the best single rung by more than the noise of
        validation (`clearly_better`): it serves at its members' cost together.
        `single`: leaving out the ensemble (the tune rung searches one method)."""
        done = [o for o in self.outcomes if o.status == "done" and o.value is not None
                and not (single and o.rung.ensemble)]
        if not done:
            return None
        if self.target is not None:  # the first (cheapest) rung that met the target wins
            met = [o for o in done if self.target.met(o.value)]
            if met:
                return met[0]
        pick = (max if self.higher_better else min)(done, key=lambda o: o.value)
        if pick.rung.ensemble:
            alone = self.best(single=True)
            if alone is not None and not self.clearly_better(pick.value, alone.value):
                return alone
        return pick

    def clearly_better(self, value: float, than: float) -> bool:
        """Whether validation `value` beats `than` by more than one standard error of `than` on
        the validation rows: sqrt(p(1-p)/n) for a metric that is a share in [0, 1] (accuracy,
        F1; on SST-2's 786 rows at 0.90 that is 1.1 points), else any improvement. The
        one-standard-error rule (Hastie, Tibshirani and Friedman, ESL 7.10): of models that
        validation cannot tell apart, keep the cheaper. On SST-2 an ensemble of full and adapter
        read one row (0.13 points) above full alone on validation and 0.57 points below it on
        dev, at twice the serving cost (docs/benchmarks.md)."""
        if not self.higher_better:
            return value < than
        noise = math.sqrt(than * (1 - than) / self.data.val) if 0 <= than <= 1 and self.data.val > 0 else 0.0
        return value - than > noise


def _correction(seconds: float, estimated_s: float) -> float:
    """How far off the cost model was on this machine and data (measured / estimated), bounded
    so one odd rung (a cache hit, a slow first load) cannot swing the next estimate wildly."""
    return min(5.0, max(0.2, seconds / max(estimated_s, 1e-9)))
