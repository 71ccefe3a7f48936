"""`tunesmith auto DATA [--target "macro_f1>=0.9"] [--budget 30m]`: the cheapest model that is
good enough (search/ladder.py climbs; this file trains its rungs).

Every rung is an ordinary run folder under <output>/auto-<data name>/, selected on validation;
the test split is scored once, for the model kept at the end. A validation split carved from the
training file is made to look like the test file (`honest_validation`): where more of its rows
repeat a training text (nearly, or word for word), enough of them train instead, or stay while
the training rows that are pieces of them (their own phrases) leave training.

A ladder can take hours, so it survives a stop: `progress.json` in its folder records the
command, the splits and each finished rung, and the same command run again continues: finished
rungs are kept, the interrupted one resumes from its last checkpoint, and the time already spent
counts against `--budget`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field

from tunesmith import models
from tunesmith.commands.ensemble import combine
from tunesmith.commands.evaluate import EvalArgs, evaluate
from tunesmith.commands.flags import positional
from tunesmith.commands.train import train
from tunesmith.commands.tune import TuneArgs, search
from tunesmith.config import build_config, keys_read
from tunesmith.data.labeled import write_split
from tunesmith.ensemble import combine_outputs
from tunesmith.errors import Interrupted, UserError
from tunesmith.inference import Predictor
from tunesmith.io import write_json
from tunesmith.methods import METHODS
from tunesmith.plan import choose_model, epochs as planned_epochs
from tunesmith.quality import holdout
from tunesmith.runs import Run
from tunesmith.search.ladder import Data, Ladder, Outcome, Rung, parse_target, plan
from tunesmith.durations import parse_duration
from tunesmith.search.study import quiet_trial_log
from tunesmith.tasks import TASKS

# Settings about reading and sampling the user's files, which the written splits no longer need.
READ_AS_WRITTEN = ("max_train_samples", "max_eval_samples", "text_col", "label_col", "encoding")
# Below this many validation rows a 0.90 accuracy has a standard error over 1.5 points (sqrt(p(1-p)/n)).
FEW_VALIDATION_ROWS = 400


class AutoArgs(BaseModel):
    """`tunesmith auto DATA`: the climb's own settings (the training flags go in `training`)."""

    data: str = Field(description="training data, as for train --data", json_schema_extra=positional())
    target: Optional[str] = Field(None, description='goal on the validation split, e.g. "macro_f1>=0.9" (none: '
                                  "climb every rung)")
    budget: Optional[str] = Field(None, description="time for the whole climb, e.g. 30m, 2h (none: no limit)")
    folder: Optional[str] = Field(None, description="folder of the rungs' runs (default: <output>/auto-<data name>)")
    training: dict = Field({}, description="training settings given as flags", json_schema_extra={"hidden": True})


@dataclass
class Climb:
    """An `auto` run's state in one place: the rungs' shared settings, the goal, the folder and
    its progress record, and the splits every rung reads."""

    values: dict  # the settings every rung shares (the method aside)
    cfg: object  # those settings, validated
    task: object
    goal: object  # the parsed --target, or None
    ladder_dir: Path
    progress: Progress
    splits: object = None
    honest: dict = field(default_factory=dict)  # what honest_validation moved, mended and dropped

    @property
    def metric(self) -> str:
        return self.cfg.resolved_metric()


def auto(args: AutoArgs, log=print, clock=time.monotonic) -> Path:
    """Climb the ladder; returns the kept run folder."""
    climb = _start(args)
    _read_splits(climb, log)
    budget_s = parse_duration(args.budget, "--budget")
    ladder = _ladder(climb, budget_s, clock, log)
    try:
        outcomes = ladder.climb()
    except (Interrupted, KeyboardInterrupt):  # a rung's own message would say to resume that rung alone
        climb.progress.stopped(ladder.spent_s())
        raise Interrupted(climb.ladder_dir, f"the finished rungs and the last checkpoint are kept in "
                                            f"{climb.ladder_dir}: run the same command to continue the ladder") from None
    return _keep(climb, ladder, outcomes, budget_s, log)


def _start(args: AutoArgs) -> Climb:
    """The settings every rung shares (validated), the goal, and the ladder's folder and progress."""
    values = {"data": args.data, **{k: v for k, v in args.training.items() if v is not None}}
    values.pop("method", None)  # the ladder chooses it
    cfg = build_config(values, "auto")
    task = TASKS[cfg.task]
    goal = parse_target(args.target, task.metrics_higher_is_better) if args.target else None
    if goal is not None:
        values["metric"] = goal.metric  # every rung keeps its best checkpoint by the target's metric
        cfg = build_config(values, "auto")
    ladder_dir = Path(args.folder) if args.folder else Path(cfg.output) / f"auto-{Path(args.data).stem}"
    if (ladder_dir / "auto.json").is_file():
        raise UserError(f"{ladder_dir}: a finished ladder is already there; see {ladder_dir / 'auto.json'}, "
                        "or pass --folder for a new one")
    command = {"data": args.data, "settings": dict(values), "target": args.target}  # --budget may change
    return Climb(values, cfg, task, goal, ladder_dir, Progress.open(ladder_dir / "progress.json", command))


def _read_splits(climb: Climb, log) -> None:
    """The splits every rung reads: a stopped ladder's as written, else carved honestly now
    (with the model the data calls for)."""
    progress = climb.progress
    if progress.honest is not None:  # a stopped ladder: its splits as written, not carved again
        climb.honest = progress.honest
        if progress.record["model"]:  # the model chosen for the data the first time
            climb.values["model"] = progress.record["model"]
        climb.values = _reading_splits(climb.values, climb.honest)
        climb.cfg = build_config(climb.values, "auto")
        climb.splits = climb.task.load_data(climb.cfg)
        log(f"auto: continuing the ladder in {climb.ladder_dir} ({len(progress.rungs)} rungs finished before the "
            f"stop; {progress.spent_s:.0f} s of the budget spent)")
        return
    splits = climb.task.load_data(climb.cfg)
    model, why = choose_model(climb.cfg, splits)
    if model != climb.cfg.resolved_model():  # Chinese, Russian, ... text: every rung reads it with that model
        log(why)
        climb.values["model"] = model
        climb.cfg = build_config(climb.values, "auto")
    climb.splits, climb.honest = honest_validation(climb.cfg, climb.task, splits, climb.ladder_dir / "data", log)
    climb.values = _reading_splits(climb.values, climb.honest)
    progress.start(climb.honest, climb.values.get("model"))


def _ladder(climb: Climb, budget_s: float | None, clock, log) -> Ladder:
    """The rungs that apply, costed by one measured forward pass, with how to run each."""
    cfg, task, splits, metric = climb.cfg, climb.task, climb.splits, climb.metric
    facts = Data(train=len(splits.train), val=len(splits.val), labels=len(splits.labels),
                 named_labels=any(not str(label).strip().isdigit() for label in splits.labels),
                 epochs=planned_epochs(cfg, len(splits.train)))
    log(f"calibrating: one forward pass of {cfg.resolved_model()} on training texts ...")
    forward_s = calibrate(cfg, task, splits)
    rungs = plan(cfg.task, METHODS, facts, ensemble="mean" in task.ensemble)
    log(f"auto: {len(splits.train):,} training rows, {len(splits.labels)} labels; rungs "
        f"{', '.join(r.name for r in rungs)}" + (f"; target val {climb.goal}" if climb.goal else "")
        + (f"; budget {budget_s:.0f} s" if budget_s else ""))
    ladder = Ladder(rungs, metric, facts, forward_s, budget_s, climb.goal, task.metrics_higher_is_better[metric],
                    lambda rung, seconds_left: _run_rung(climb, ladder, rung, seconds_left, log), clock, log,
                    earlier=climb.progress.finished_rungs(), record=climb.progress.add,
                    unfinished_s=climb.progress.unfinished_s)
    return ladder


def _run_rung(climb: Climb, ladder: Ladder, rung: Rung, seconds_left: float | None, log) -> Outcome:
    """One rung trained (or continued from its last checkpoint), tuned or ensembled."""
    ladder_dir, metric = climb.ladder_dir, climb.metric
    try:
        if rung.tune:
            return _tune_rung(rung, climb.values, ladder_dir, metric, ladder, seconds_left, log)
        if rung.ensemble:
            shutil.rmtree(ladder_dir / rung.name, ignore_errors=True)  # a stopped one's part-written folder
            return _ensemble_rung(rung, ladder.members(), climb.task, metric, ladder.higher_better, ladder_dir)
        settings = climb.values if rung.passes is None else {**climb.values, "epochs": rung.passes}
        rung_cfg = _rung_config(settings, rung.method, ladder_dir, rung.name)
        stopped = Run(ladder_dir / rung.name)
        if stopped.config_file.is_file() and not stopped.finished:  # this rung was training at the stop
            log(f"{rung.name}: continuing from its last checkpoint")
            rung_cfg = build_config({"resume": str(stopped.path)}, f"auto rung {rung.name}")
        else:  # nothing to continue from (or it finished after the last record): train it afresh
            shutil.rmtree(stopped.path, ignore_errors=True)
        return _outcome(rung, train(rung_cfg, log=quiet_trial_log, score_test=False), metric)
    except UserError as exc:  # a method that cannot adapt this model, say: the next rung may
        return Outcome(rung, "failed", note=str(exc))


def _keep(climb: Climb, ladder: Ladder, outcomes: list, budget_s: float | None, log) -> Path:
    """The winner scored on test (once), the table, auto.json; the progress record removed."""
    metric, goal, honest = climb.metric, climb.goal, climb.honest
    winner = ladder.best()
    if winner is None:
        reasons = "; ".join(f"{o.rung.name}: {o.status} ({o.note})" for o in outcomes)
        raise UserError(f"auto: no rung finished within the budget ({reasons}); give a larger --budget")
    evaluate(EvalArgs(run=winner.run), out=lambda _: None)  # the test split, scored once, for the kept model
    test = json.loads(Run(Path(winner.run)).metrics_file.read_text(encoding="utf-8"))["test"]
    _print_table(outcomes, winner, metric, log)
    write_json(climb.ladder_dir / "auto.json", {
        "metric": metric, "target": str(goal) if goal else None, "budget_s": budget_s, "winner": winner.run,
        "validation": {"rows": len(climb.splits.val), "repeats_moved_to_train": honest.get("moved", 0),
                       "repeats_kept_by_dropping_training_rows": honest.get("mended", 0),
                       "training_rows_dropped": honest.get("dropped", 0)},
        "test": {k: v for k, v in test.items() if isinstance(v, float)},
        "rungs": [_row(o) for o in outcomes]})
    climb.progress.path.unlink()  # auto.json says it all now
    score = test.get(metric)
    log(f"kept: {winner.rung.name} ({winner.run}); val {metric} {winner.value:.4f}"
        + (f", test {metric} {score:.4f}" if isinstance(score, float) else "")
        + ("" if goal is None or goal.met(winner.value) else f"; the target {goal} was not met"))
    return Path(winner.run)


def honest_validation(cfg, task, splits, folder: Path, log) -> tuple:
    """A validation split carved out of the training file, made to look like the test file
    (quality/holdout.py says why): where more of its rows repeat a training text (nearly, or word
    for word) than the test file's do, enough of them train instead, or stay while the training
    rows that are pieces of them leave (holdout.make_honest). The three splits are then
    written to `folder` so every rung reads the same ones. Returns the splits and {"moved",
    "mended", "dropped": row counts, "settings": the rungs' data keys}, or the splits unchanged
    and {} where nothing changes: a validation file the
    user chose, a test split carved like validation (it has the same share), --dedupe near (the
    rungs drop near-copies themselves), --no-quality-checks, or rows that are not one text and
    one label."""
    if ("near-duplicates" not in task.quality_checks or not cfg.quality_checks or cfg.val_data
            or not cfg.test_data or cfg.dedupe == "near"
            or not all(map(holdout.plain_rows, (splits.train, splits.val, splits.test)))):
        return splits, {}
    log("validation: comparing how often it repeats training text with how often the test file does ...")
    repeats_val, repeats_test = holdout.repeating_rows(
        splits.train, [splits.val, splits.test], models.resolve(cfg.resolved_model()),
        task.load_processor(cfg.resolved_model(), cfg), cfg.resolved_max_length(), cfg.near_threshold)
    test_share = len(repeats_test) / len(splits.test)
    honest_splits, done = holdout.make_honest(splits, repeats_val, test_share, cfg.seed)
    if done == holdout.Honest():
        return splits, {}
    shares = (f"{len(repeats_val):,} of {len(splits.val):,} validation rows repeat a training text (cosine >= "
              f"{cfg.near_threshold:g}, or word for word: inside one or sharing a run of words), against "
              f"{test_share:.1%} of the test file's")
    if not honest_splits.val:
        log(f"warning: {shares}: validation scores will run high; give --val-data with texts like the test data")
        return splits, {}
    log(f"validation: {shares}; {done.moved:,} of them train instead"
        + (f", and {done.mended:,} stay while their pieces leave training ({done.dropped:,} training rows that share "
           "a run of words with a validation row or lie inside one, 3 words or more)" if done.dropped else "")
        + f", so the target is judged on rows like the test data (the splits: {folder}; the test split is unchanged)")
    staying = len(honest_splits.val)
    if staying < FEW_VALIDATION_ROWS:
        log(f"warning: only {staying} validation rows stay: a score on them is uncertain by up to "
            f"{100 * (0.25 / staying) ** 0.5:.1f} points (one standard error); --val-data with more texts like "
            "the test data gives a steadier one")
    for name in ("train", "val", "test"):
        write_split(folder / f"{name}.jsonl", getattr(honest_splits, name))
    return honest_splits, {"moved": done.moved, "mended": done.mended, "dropped": done.dropped,
                           "settings": {"data": str(folder / "train.jsonl"), "val_data": str(folder / "val.jsonl"),
                                        "test_data": str(folder / "test.jsonl")}}


def _reading_splits(values: dict, honest: dict) -> dict:
    """The rungs' settings: where `honest_validation` wrote the splits, they read those as they
    are (sampled already, JSON lines) instead of the user's files."""
    if not honest:
        return values
    return {k: v for k, v in values.items() if k not in READ_AS_WRITTEN} | honest["settings"]


def calibrate(cfg, task, splits, sample: int = 64) -> float:
    """Seconds of one forward pass per training example, measured on up to `sample` of them
    (after a warm-up batch: the first call pays for thread pools and allocations)."""
    tokenizer = task.load_processor(cfg.resolved_model(), cfg)
    model = task.build_model(models.resolve(cfg.resolved_model()), splits.labels)
    part = splits.train.subset(range(min(sample, len(splits.train))))
    features = task.encode(tokenizer, part.texts, part.labels, splits.labels, cfg.resolved_max_length())
    warm = splits.train.subset(range(min(8, len(splits.train))))
    task.predict(model, task.encode(tokenizer, warm.texts, warm.labels, splits.labels, cfg.resolved_max_length()))
    started = time.perf_counter()
    task.predict(model, features)
    return (time.perf_counter() - started) / max(1, len(part))


def _rung_config(values: dict, method: str, folder: Path, name: str):
    """The shared settings with this rung's method; keys that method does not read (a --lora-r
    meant for the lora rung) are left out of the others."""
    return build_config({**keys_read({**values, "method": method}), "output": str(folder), "name": name},
                        f"auto rung {name}")


def _outcome(rung: Rung, run: Run, metric: str) -> Outcome:
    metrics = json.loads(run.metrics_file.read_text(encoding="utf-8"))
    size = sum(f.stat().st_size for f in run.model_dir.rglob("*") if f.is_file()) / 2**20
    return Outcome(rung, "done", value=float(metrics["val_best"][metric]),
                   trainable_pct=metrics["parameters"]["trainable_pct"], size_mb=round(size, 1), run=str(run.path))


def _ensemble_rung(rung: Rung, members: list[Outcome], task, metric: str, higher_better: bool,
                   folder: Path) -> Outcome:
    """The best two or three trained rungs averaged: each predicts the validation rows once,
    and the best mean of the top k (k = 2, 3, ...) on validation is kept as an ensemble run
    (`tunesmith ensemble`'s folder) under `folder`. Fewer members win a tie: each costs serving time."""
    runs = [Run(Path(o.run)) for o in members]
    if any((r.data_dir / "val.jsonl").read_bytes() != (runs[0].data_dir / "val.jsonl").read_bytes() for r in runs):
        return Outcome(rung, "failed", note="the rungs were validated on different rows")
    val, labels = runs[0].split("val"), runs[0].labels()
    outputs = [Predictor.from_run(run).predict(val.texts) for run in runs]
    scored = [(task.metrics(val.labels, combine_outputs(outputs[:k]), labels), k) for k in range(2, len(runs) + 1)]
    sign = 1 if higher_better else -1
    scores, k = max(scored, key=lambda s: (sign * s[0][metric], -s[1]))
    kept = combine(runs[:k], rung.name, str(folder))
    write_json(kept.metrics_file, {"val_best": scores})
    size = sum(f.stat().st_size for f in (kept.path / "members").rglob("*") if f.is_file()) / 2**20
    return Outcome(rung, "done", value=float(scores[metric]), size_mb=round(size, 1), run=str(kept.path),
                   note=f"mean of {', '.join(o.rung.name for o in members[:k])}")


def _row(o: Outcome) -> dict:
    """One rung as auto.json lists it."""
    return {"rung": o.rung.name, "status": o.status, "val": o.value, "seconds": round(o.seconds, 1),
            "estimated_s": round(o.estimate_s, 1), "trainable_pct": o.trainable_pct, "size_mb": o.size_mb,
            "run": o.run, "note": o.note}


class Progress:
    """`progress.json`: what a ladder that may be stopped needs to continue. The command (a
    different one is refused rather than mixed in), the splits' settings (`honest_validation`'s
    answer, None until it is known) and each finished rung."""

    def __init__(self, path: Path, record: dict):
        self.path, self.record = path, record

    @classmethod
    def open(cls, path: Path, command: dict) -> "Progress":
        if not path.is_file():
            if path.parent.is_dir() and any(p.name != "data" for p in path.parent.iterdir()):
                raise UserError(f"{path.parent}: holds other files but no progress.json, so it is not a ladder to "
                                "continue; pass --folder for a new one")
            return cls(path, {"command": command, "honest": None, "model": None, "rungs": []})
        record = json.loads(path.read_text(encoding="utf-8"))
        if json.dumps(record["command"], sort_keys=True, default=str) != json.dumps(command, sort_keys=True, default=str):
            raise UserError(f"{path.parent}: a ladder with other settings stopped there ({path}); run the same "
                            "command to continue it, or pass --folder for a new one")
        return cls(path, record)

    honest = property(lambda self: self.record["honest"])
    rungs = property(lambda self: self.record["rungs"])
    # Seconds spent outside the finished rungs (the rung that was training at a stop).
    unfinished_s = property(lambda self: self.record.get("unfinished_s", 0.0))
    finished_s = property(lambda self: sum(row["seconds"] for row in self.rungs))
    spent_s = property(lambda self: self.unfinished_s + self.finished_s)

    def start(self, honest: dict, model: str | None) -> None:
        self.record |= {"honest": honest, "model": model}
        write_json(self.path, self.record)

    def stopped(self, spent_s: float) -> None:
        """The climb stopped having spent `spent_s` of the budget: what the finished rungs do not
        account for was spent in the one that was training, and counts when the ladder continues."""
        self.record["unfinished_s"] = round(max(0.0, spent_s - self.finished_s), 1)
        write_json(self.path, self.record)

    def add(self, outcome: Outcome) -> None:
        self.rungs.append({"spec": asdict(outcome.rung), **_row(outcome)})
        write_json(self.path, self.record)

    def finished_rungs(self) -> dict[str, Outcome]:
        """The recorded rungs whose run folders are still there and finished (a failed rung has
        none), by name."""
        kept = {}
        for row in self.rungs:
            if row["run"] and not Run(Path(row["run"])).finished:
                continue
            kept[row["rung"]] = Outcome(Rung(**row["spec"]), row["status"], seconds=row["seconds"],
                                        estimate_s=row["estimated_s"], value=row["val"],
                                        trainable_pct=row["trainable_pct"], size_mb=row["size_mb"], run=row["run"],
                                        note=row["note"])
        return kept


def _tune_rung(rung: Rung, values: dict, folder: Path, metric: str, ladder: Ladder, seconds_left: float | None,
               log) -> Outcome:
    """A short study around the best rung's method, in the time that is left: no trial starts
    later than one trial's time before the end of the budget."""
    one = max(1.0, ladder.best(single=True).seconds)
    trials = 8 if seconds_left is None else max(ladder.min_tune_trials, int(seconds_left // one))
    timeout = None if seconds_left is None else max(1.0, seconds_left - one)
    study = TuneArgs(source=f"auto rung {rung.name}", study_folder=str(folder / "tune"), trials=min(trials, 20),
                     timeout=f"{timeout:.0f}" if timeout else None)
    best = search(keys_read({**values, "method": rung.method}), None, study, score_best=False, log=log)
    return _outcome(rung, Run(best), metric)


def _print_table(outcomes: list[Outcome], winner: Outcome, metric: str, log) -> None:
    log(f"{'rung':<14} {'val ' + metric:>12} {'seconds':>8} {'estimated':>9} {'trainable %':>11} {'size MB':>8}  status")
    for o in outcomes:
        value = f"{o.value:.4f}" if o.value is not None else "-"
        pct = f"{o.trainable_pct:.2f}" if o.trainable_pct is not None else "-"
        size = f"{o.size_mb:.1f}" if o.size_mb is not None else "-"
        mark = "  <- kept" if o is winner else ""
        status = o.status + (f": {o.note}" if o.status == "done" and o.note else "")
        log(f"{o.rung.name:<14} {value:>12} {o.seconds:>8.0f} {o.estimate_s:>9.0f} {pct:>11} {size:>8}  {status}{mark}")

