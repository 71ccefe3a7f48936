"""`tunesmith train`: data -> checks -> model -> fine-tuning -> saved, evaluated run folder.

Everything that can fail because of the user's input (config, data, model name) is done
before the run folder is created, so bad input never leaves a folder behind. A folder that
exists without `metrics.json` is an interrupted run: `--resume` continues it.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import torch
from pydantic import BaseModel, Field

from tunesmith import cards, models, plan, quality
from tunesmith.commands.flags import positional
from tunesmith.config import TrainConfig, config_to_yaml_dict, load_config
from tunesmith.data.augment import augment_examples
from tunesmith.data.labeled import write_split
from tunesmith.data.long_text import LongText
from tunesmith.data.splits import Splits
from tunesmith.errors import Interrupted, UserError
from tunesmith.evaluate import report
from tunesmith.quality.dynamics import Dynamics
from tunesmith.inference import Predictor
from tunesmith.io import atomic_dir, write_json, write_text, write_yaml
from tunesmith.methods import METHODS, count_parameters, load_tuned
from tunesmith import runs as run_status
from tunesmith.runs import Run, training_lock
from tunesmith.tasks import TASKS
from tunesmith.tasks.mean_pool import trained_pooling
from tunesmith import track
from tunesmith.train import budget, checkpoint, continual, distributed
from tunesmith.train.loop import FitResult, Goal, Hooks, LoopState, fit, schedule
from tunesmith.train.objective import training_objective


class TrainArgs(BaseModel):
    """`tunesmith train [CONFIG|DATA] [--flag value ...]` (the training flags go in `training`)."""

    config: Optional[str] = Field(None, description="YAML config file (flags override its values), or the training "
                                  "data itself", json_schema_extra=positional())
    training: dict = Field({}, description="training settings given as flags", json_schema_extra={"hidden": True})


def main(args: TrainArgs) -> None:
    """The verb: the config file (or the data named in its place) with the flags on top."""
    overrides, config = dict(args.training), args.config
    if config is not None and _is_data(config):
        # `tunesmith train data.csv` names the data, as `compare DATA` does; a config is YAML.
        if overrides.get("data") is not None:
            raise UserError(f"train: {config} looks like data, and --data {overrides['data']} is given too; "
                            "pass one data set (the positional argument is a YAML config or the data)")
        config, overrides["data"] = None, config
    run = train(load_config(config, overrides))
    print(f"finished: {run.path} (report: {run.report_file})")


def _is_data(path: str) -> bool:
    """Whether a positional argument names data (a table, a CoNLL file, an image folder, a
    built-in data set's name), not a config: configs are YAML files."""
    return Path(path).suffix.lower() not in (".yaml", ".yml")


def train(cfg: TrainConfig, log=print, on_evaluate=None, score_test: bool = True) -> Run:
    """Train one run. `on_evaluate(metrics)` sees every validation result as it comes (a
    `tune` trial reports it, and may stop the run by raising). With `score_test=False` (a tune
    trial: selection sees validation only) neither the baseline nor the model touches the test
    split; `tunesmith eval RUN` scores it later."""
    processes = distributed.processes()  # several under `accelerate launch`; only the main one writes
    log = log if processes.is_main_process else _silent
    with ExitStack() as held:
        run = None
        if cfg.resume is not None:
            cfg, run = _config_of_interrupted_run(cfg.resume)
            if processes.is_main_process:
                held.enter_context(training_lock(run))  # before any work: a second resume is refused now
        return _train(Start(cfg, run, processes, log, on_evaluate, score_test), held)


@dataclass(frozen=True)
class Start:
    """How a run was asked for: its settings (as given), its folder when resuming, and who is watching."""

    cfg: TrainConfig
    run: Run | None  # an interrupted run to continue; None: a new one
    processes: object  # accelerate's view of the processes (one, or several under `accelerate launch`)
    log: Callable
    on_evaluate: Callable | None = None
    score_test: bool = True


@dataclass
class Training:
    """A run in progress: what each stage has built, in one place, so the stages read top to
    bottom. The settings are the resolved plan's, frozen."""

    cfg: TrainConfig
    source: str  # where the pretrained weights load from
    run: Run
    task: object
    method: object
    splits: Splits
    tokenizer: object
    model: object
    start: Start
    earlier: Run | None = None  # continual learning: the finished run this one continues
    checked: object = None  # the data-quality findings, when they ran
    examples: dict = field(default_factory=dict)  # split name -> the Examples that train or score
    features: dict = field(default_factory=dict)  # split name -> encoded features
    started_as_probe: bool = False  # the head starts as the baseline's probe: step 0 is the baseline
    params: dict = field(default_factory=dict)  # trainable and total parameters, the method applied
    tracking: object = None

    @property
    def resuming(self) -> bool:
        return self.start.run is not None

    @property
    def main(self) -> bool:
        return self.start.processes.is_main_process

    def log(self, line: str) -> None:
        self.start.log(line)


def _train(start: Start, held: ExitStack) -> Run:
    """The stages: prepare (data, plan, model), the run folder, features, baseline, fine-tune
    and keep the best, test, report."""
    state = _prepare(start)
    _open_run_folder(state, held)
    state.tracking = track.Tracking(state.run.path, state.cfg, state.log) if state.main else None
    try:
        _encode(state)
        _baseline(state)
        result = _fine_tune(state)
        if state.main:  # the main process keeps, exports and tests the model
            _finish(state, result)
    except BaseException as exc:
        _record_failure(state, exc)
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(state.run.path) from None
        raise
    if state.tracking is not None:
        state.tracking.close("finished")
    return state.run


def _prepare(start: Start) -> Training:
    """1. Data, the plan (every default resolved once, from the data) and the model, each
    refused before anything is written when it cannot work."""
    cfg, log, resuming = start.cfg, start.log, start.run is not None
    run = start.run or Run(Path(distributed.from_main(  # a taken name fails now; the others use the main's folder
        str(_unused_run_folder(cfg).path) if start.processes.is_main_process else None)))
    task, method = TASKS[cfg.task], METHODS[cfg.method]
    method.check(cfg, task)  # e.g. qlora without a GPU: refused before any data or model is loaded
    track.check(cfg)  # --track mlflow without mlflow installed: refused now too
    earlier = continual.prior_run(cfg) if cfg.from_run else None
    if earlier is not None:
        log(f"continual learning: starting from {earlier.path} ({len(earlier.labels())} labels)")
    splits = _saved_splits(run, cfg) if resuming else task.load_data(cfg)
    for note in splits.notes:
        log(note)
    run_plan = plan.resolve(cfg, splits, str(earlier.model_dir.resolve()) if earlier is not None else None)
    tokenizer = task.load_processor(run_plan.settings.model, run_plan.settings)  # or image preprocessing
    models.hold_to_limit(tokenizer, run_plan.position_limit)
    findings = task.check(splits, tokenizer, run_plan.settings.max_length)
    lengths = findings.facts.get("token_lengths")
    # A resumed run keeps its batches: its checkpoints count steps of them.
    cost, smaller = ([], None) if resuming else budget.fit_to_memory(run_plan.settings, task, run_plan.source,
                                                                     lengths, len(splits.train))
    if smaller is not None:
        run_plan = run_plan.with_batch(*smaller)
    cfg = run_plan.settings
    for key, note in run_plan.notes.items():
        log(f"note: {note}" if key == "max_length" else note)
    for warning in findings.warnings:
        log(f"warning: {warning}")
    checked = None if resuming else _quality(cfg, task, splits, run_plan.source, tokenizer, start.score_test, log)
    for line in cost:
        log(line)
    torch.manual_seed(cfg.seed)  # the head's initialisation is part of what the seed fixes
    if earlier is not None:  # its labels keep their class ids; new ones come after them
        splits.labels = continual.extended_labels(earlier.labels(), splits.labels)
        model = load_tuned(task, str(earlier.model_dir))
    else:
        model = task.build_model(run_plan.source, splits.labels, _pooling(cfg, task, method, run_plan.source))
    return Training(cfg, run_plan.source, run, task, method, splits, tokenizer, model, start, earlier, checked)


def _open_run_folder(state: Training, held: ExitStack) -> None:
    """2. The run folder, with the resolved config that re-runs it and the exact splits; all of
    it or nothing."""
    run, splits = state.run, state.splits
    if not state.resuming and state.main:
        run.path.mkdir(parents=True)
        try:
            write_yaml(run.config_file, config_to_yaml_dict(state.cfg))
            write_json(run.labels_file, splits.labels)
            for name in ("train", "val", "test"):
                write_split(run.data_dir / f"{name}.jsonl", getattr(splits, name))
            if state.checked is not None:
                state.checked.write(run.path / "quality")
                write_json(run.path / "quality" / "facts.json", state.checked.facts)
        except BaseException:
            shutil.rmtree(run.path, ignore_errors=True)
            raise
        held.enter_context(training_lock(run))
        state.log(f"run folder: {run.path}")
    state.start.processes.wait_for_everyone()


def _record_failure(state: Training, exc: BaseException) -> None:
    """What a run that stopped leaves: the trackers closed, and the folder removed (refused
    before any step: nothing in it is worth keeping) or marked failed or interrupted."""
    if not state.main:
        return
    state.tracking.close(track.status_of(exc))
    if isinstance(exc, UserError) and not state.resuming and not state.run.checkpoints.exists():
        shutil.rmtree(state.run.path, ignore_errors=True)  # bad input never leaves a folder behind
    else:
        run_status.record_ending(state.run, exc)  # what the dashboard shows: failed or interrupted


def _encode(state: Training) -> None:
    """3. Features (token ids cached on disk) with targets, for every split. Augmentation
    touches the training split only, never val or test: text edits (EDA) here, and the
    task's own (image flips and crops) inside encode."""
    cfg, splits = state.cfg, state.splits
    examples = {"train": splits.train, "val": splits.val, "test": splits.test}
    if state.earlier is not None and cfg.replay:  # continual learning: rehearse some of the old training data
        examples["train"] = continual.with_replay(splits.train, state.earlier.split("train"), cfg.replay, cfg.seed)
        state.log(f"replay: {len(examples['train']) - len(splits.train):,} old training examples mixed in")
    if cfg.augment_copies:
        examples["train"] = augment_examples(splits.train, cfg.augment_copies, cfg.augment_ops, cfg.augment_rate,
                                             cfg.seed)
        state.log(f"augmentation: {len(splits.train):,} training examples + "
                  f"{len(examples['train']) - len(splits.train):,} edited copies ({', '.join(cfg.augment_ops)})")
    state.examples = examples
    state.features = {name: state.task.encode(state.tokenizer, part.texts, part.labels, splits.labels,
                                              cfg.max_length, augment=name == "train", long_text=LongText.of(cfg))
                      for name, part in examples.items()}
    if not state.features["train"].rows:  # a language model's rows lose their answers when the prompt fills them
        raise UserError(f"--max-length {cfg.max_length}: no training example keeps anything to learn at this length "
                        "(the prompts fill it); raise --max-length (`tunesmith check` shows the token lengths)")
    if state.task.score_reference is not None:  # DPO: the reference's log-probabilities, before any tuning
        if state.task.score_reference(state.model, state.features):
            state.log("scored every pair with the reference (the starting model)")


def _baseline(state: Training) -> None:
    """4. The untuned baseline, from the pristine pretrained encoder (once per run); then the
    head starts as its probe where the task has one, so step 0 is the baseline."""
    cfg, task, run, splits = state.cfg, state.task, state.run, state.splits
    if cfg.baseline and state.start.score_test and task.has_baseline and state.main and not run.baseline_file.is_file():
        state.log("baseline: scoring the untuned model on the test split ...")
        baseline = task.baseline(state.model, state.features["train"], state.features["test"],
                                 state.examples["train"].labels, splits.test.labels, splits.labels, cfg.seed)
        write_json(run.baseline_file, baseline)
    # A run resumed before its first checkpoint starts over, so its head starts as a fresh one does.
    from_checkpoint = state.resuming and checkpoint.find(run.checkpoints / "last") is not None
    if task.start_head is not None and not from_checkpoint and state.earlier is None:
        note = task.start_head(state.model, state.features["train"], state.examples["train"].labels, splits.labels,
                               cfg.seed)
        if note:
            state.log(note)
            state.started_as_probe = True


def _fine_tune(state: Training) -> FitResult:
    """5-6. The method applied, the loop run, and the best checkpoint (chosen on validation,
    never on test) kept in `state.model`."""
    cfg, task, method = state.cfg, state.task, state.method
    ewc = _prepare_model(state)
    params = state.params = count_parameters(state.model)
    state.log(f"method {cfg.method}: {params['trainable']:,} of {params['total']:,} parameters train "
              f"({params['trainable_pct']:.2f}%), lr {cfg.lr:g}")
    validate, evaluate, fit_head = _validation(state)
    metric = cfg.metric
    if not method.trains:  # zero-shot: nothing trains; the validation score is still reported
        state.log(f"method {cfg.method}: no training")
        return FitResult(LoopState(best_metric=evaluate(state.model)[metric], best_step=0), 0, "no")
    loss = training_objective(cfg, task, method, state.tokenizer, state.examples["train"].labels,
                              state.splits.labels, ewc)
    dynamics = _dynamics(state)
    hooks = Hooks(_saving(evaluate, dynamics, state), loss, method.on_step,
                  validate if state.started_as_probe else None, state.tracking,
                  watch=dynamics.watching if dynamics is not None else None)
    recording = dynamics.attach(state.model) if dynamics is not None else None
    try:
        result = fit(state.model, state.features["train"], cfg, state.run.path, hooks,
                     Goal(metric, task.metrics_higher_is_better[metric]), resume=state.resuming, log=state.log)
    finally:
        if recording is not None:
            recording.remove()
    if not state.main:
        return result
    if dynamics is not None:  # (saved complete already: the last step is always evaluated)
        _training_suspects(state, dynamics)
    if result.state.best_step == 0 and not cfg.average_last:
        state.log(f"note: no step beat the starting model (the untuned probe) on validation {metric}, so the run "
                  f"keeps it; for more from training try --lr {cfg.lr / 4:g} or --lr {cfg.lr * 4:g}, or more data")
    _keep_best(state.run, cfg, state.model, state.log)
    fit_head(state.model)
    return result


def _dynamics(state: Training) -> Dynamics | None:
    """A recorder of each training row's logits per epoch (quality/dynamics.py), for tasks
    with one class per row; an interrupted run's recording continues where it stopped."""
    if "label-errors" not in state.task.quality_checks:
        return None
    train = state.features["train"]
    total_steps, _ = schedule(len(train), state.cfg)
    dynamics = Dynamics.for_run(train, len(state.splits.labels), total_steps, state.cfg.steps_per_epoch(len(train)))
    if dynamics is not None and state.resuming:
        dynamics.load(state.run.path / "quality")
    return dynamics


def _saving(evaluate, dynamics: Dynamics | None, state: Training):
    """`evaluate`, saving the recording first at every checkpoint, so a resumed run has it."""
    if dynamics is None or not state.main:
        return evaluate

    def evaluate_and_save(model) -> dict:
        dynamics.save(state.run.path / "quality")
        return evaluate(model)

    return evaluate_and_save


def _training_suspects(state: Training, dynamics: Dynamics) -> None:
    """quality/training_suspect_labels.csv: rows the model preferred another class for over
    most of the run (negative AUM), those the probe flagged too first, with the counts in the
    run's quality facts."""
    checked = state.checked
    probe_rows = None  # the probe's flags index the split as read; after --drop-suspect-labels they are gone
    if checked is not None and "suspect_labels" in checked.facts and not state.cfg.drop_suspect_labels:
        probe_rows = {s.row for s in checked.suspects}
    found = quality.training_suspects(dynamics, state.splits.train, state.splits.labels, probe_rows)
    found.write(state.run.path / "quality")
    facts_file = state.run.path / "quality" / "facts.json"
    facts = json.loads(facts_file.read_text()) if facts_file.is_file() else {}
    write_json(facts_file, {**facts, **found.facts, "files": {**facts.get("files", {}), **found.facts["files"]}})
    for line in found.lines:
        state.log(f"data quality: {line}")
    kappa = (checked.facts.get("suspect_labels") or {}).get("probe_kappa") if checked is not None else None
    if found.suspects and kappa is not None:
        better = "suspect_labels.csv (the probe's)" if kappa >= quality.DYNAMICS_BETTER_BELOW_KAPPA else \
            "training_suspect_labels.csv (the run's)"
        state.log(f"data quality: with the probe's kappa at {kappa:.2f}, {better} is the better list to review on this "
                  "data (docs/benchmarks.md, \"Label errors the probe misses\")")


def _validation(state: Training):
    """`validate(model) -> metrics` on the validation split (few-shot's head fitted first),
    `evaluate`, the same reported to whoever watches (a tune trial's pruner), and `fit_head`."""
    task, method, splits, features = state.task, state.method, state.splits, state.features

    def fit_head(m) -> None:  # few-shot: the head is fitted on the training split, outside the loop
        if method.fit_head is not None:
            method.fit_head(m, features["train"], state.examples["train"].labels, splits.labels)

    def validate(m) -> dict:
        fit_head(m)
        return task.metrics(splits.val.labels, task.predict(m, features["val"]), splits.labels)

    def evaluate(m) -> dict:
        metrics = validate(m)
        if state.start.on_evaluate is not None:
            state.start.on_evaluate(metrics)
        return metrics

    return validate, evaluate, fit_head


def _prepare_model(state: Training):
    """The model the loop trains, into `state.model` (the method applied; continual learning:
    the earlier run's head extended, EWC's penalty bound to it); returns the penalty or None."""
    cfg, earlier, model = state.cfg, state.earlier, state.model
    ewc = None
    if earlier is not None:
        if cfg.ewc_lambda:
            state.log("EWC: weighing each weight's importance on the old training data ...")
            old_train = earlier.split("train")
            sample = old_train.subset(range(min(len(old_train), continual.FISHER_SAMPLES)))
            ewc = continual.EWC(model, state.task.encode(state.tokenizer, sample.texts, sample.labels,
                                                         state.splits.labels, cfg.max_length), cfg.ewc_lambda)
        model = continual.extend_head(model, earlier.labels(), state.splits.labels)
    if cfg.gradient_checkpointing:
        _checkpoint_activations(model, cfg)
    state.model = state.method.apply(model, cfg, state.task)
    if ewc is not None:
        ewc.bind(state.model)
    return ewc


def _keep_best(run: Run, cfg: TrainConfig, model, log) -> None:
    """The best checkpoint into `model`, or the average of the last k evaluations' weights."""
    kept = sorted(run.checkpoints.glob("eval-*"))[-cfg.average_last:] if cfg.average_last else []
    if kept:
        log(f"averaging the weights of the last {len(kept)} evaluations ({', '.join(k.name for k in kept)})")
        checkpoint.average_weights(kept, model)
    else:
        checkpoint.load_weights(checkpoint.find(run.checkpoints / "best"), model)


def _finish(state: Training, result: FitResult) -> None:
    """7-8. The model saved, the test split scored from it, the report and metrics.json (last:
    its presence marks the run finished), and what the result says to the user."""
    cfg, task, run, metric = state.cfg, state.task, state.run, state.cfg.metric
    tuned = task.tune_on_validation(state.model, state.features["val"], state.splits.val.labels, state.splits.labels)
    _export_model(state.method, state.model, state.tokenizer, run)
    metrics = _metrics(state, result, tuned, state.params)
    history = run.history()
    write_text(run.report_file, report.render(f"tunesmith run {run.path.name}", run.config(), metrics,
                                              history, state.splits.labels))
    write_json(run.metrics_file, metrics)
    cards.write(run)  # model/README.md: reads metrics.json
    if state.tracking is not None:  # settings, test metrics, report and model to the trackers
        state.tracking.finish(run.config(), metrics)
    higher_better = task.metrics_higher_is_better[metric]
    for line in versus_baseline(metrics, metric, higher_better, task.baseline_name):
        state.log(line)
    for line in learned_nothing(history, metric, higher_better, cfg.lr):
        state.log(line)


def _metrics(state: Training, result: FitResult, tuned: dict, params: dict) -> dict:
    """The run's metrics: what training cost, the best validation score, and (unless a tune
    trial asked not to: the test entry then stays empty, and `tunesmith eval RUN` fills it)
    the test split scored from the saved model."""
    run, metric = state.run, state.cfg.metric
    scored = _score_test(state) if state.start.score_test else {"test": {}}
    facts = run.path / "quality" / "facts.json"
    return {
        "test": scored.pop("test"),
        "val_best": {metric: result.state.best_metric, "step": result.state.best_step},
        **({"tuned_on_validation": tuned} if tuned else {}),
        "baseline": json.loads(run.baseline_file.read_text()) if run.baseline_file.is_file() else None,
        "training": {
            "train_seconds": result.state.train_seconds,
            "samples_per_second": result.state.samples / max(result.state.train_seconds, 1e-9),
            "steps": result.state.step,
            "total_steps": result.total_steps,
            "epochs_completed": result.state.epoch,
            "stopped_early": result.state.stopped_early,
            "best_step": result.state.best_step,
            "precision": "fp32" if result.precision == "no" else result.precision,
            "processes": result.processes,
        },
        "parameters": params,
        "peak_memory_mb": peak_memory_mb(),
        "data_quality": json.loads(facts.read_text()) if facts.is_file() else None,
        **scored,  # predict_samples_per_second, and continual's forgetting
    }


def _score_test(state: Training) -> dict:
    """Test metrics from the saved model, exactly as `eval` and `predict` will load it; for
    continual learning, the old test split scored again."""
    task, splits, earlier, metric = state.task, state.splits, state.earlier, state.cfg.metric
    predictor = Predictor.from_run(state.run)
    started = time.perf_counter()
    test_outputs = predictor.predict(splits.test.texts)
    predict_seconds = time.perf_counter() - started
    test_metrics = task.metrics(splits.test.labels, test_outputs, splits.labels)
    if task.generative:  # generative tasks: answers to held-out prompts vs references
        state.log("answering test prompts to score the generated answers against the references ...")
        test_metrics.update(task.answer_metrics(predictor.model, predictor.tokenizer, splits.test.texts))
    scored = {"test": test_metrics, "predict_samples_per_second": len(splits.test) / max(predict_seconds, 1e-9)}
    if earlier is not None:  # forgetting: the old test split, as the old run scored it and now
        old_test = earlier.split("test")
        after = task.metrics(old_test.labels, predictor.predict(old_test.texts), splits.labels)
        scored["continual"] = {
            "from": str(earlier.path), "replayed": len(state.examples["train"]) - len(splits.train),
            "ewc_lambda": state.cfg.ewc_lambda, "new_labels": splits.labels[len(earlier.labels()):],
            "old_test": continual.forgetting(continual.old_metrics(earlier), after, metric,
                                             task.metrics_higher_is_better[metric])}
    return scored


def _quality(cfg: TrainConfig, task, splits: Splits, source: str, tokenizer, score_test: bool, log):
    """The data-quality checks (quality/__init__.py) before anything trains, acting on them
    when asked (--drop-suspect-labels, --dedupe near); None when they do not run. A tune trial
    (score_test False) skips the report: its study's data was the user's to check once."""
    acting = cfg.drop_suspect_labels or cfg.dedupe == "near"
    if not task.quality_checks or not (acting or (cfg.quality_checks and score_test)):
        return None
    found = quality.inspect(task, splits, source, tokenizer, cfg.resolved_max_length(), cfg.near_threshold, cfg.seed,
                            log=log)
    for line in found.lines:
        log(f"data quality: {line}")
    kappa = found.facts.get("suspect_labels", {}).get("probe_kappa", 1.0)
    if cfg.drop_suspect_labels and kappa < quality.RELIABLE_KAPPA:
        log(f"warning: --drop-suspect-labels with a weak probe (kappa {kappa:.2f} against the labels): many dropped "
            "rows may be hard examples, not label errors (docs/benchmarks.md, \"Data quality\")")
    for note in quality.leave_out(splits, found, cfg.drop_suspect_labels, cfg.dedupe == "near"):
        log(note)
    return found


def _pooling(cfg: TrainConfig, task, method, source: str) -> str:
    """What the head reads: "mean" or "cls" (--pooling; auto: what the backbone was trained for)."""
    if cfg.pooling != "auto":
        return cfg.pooling  # the config refused "mean" where the task or method has no such head
    return trained_pooling(source) if task.mean_pooling and method.mean_pooling else "cls"


def versus_baseline(metrics: dict, metric: str, higher_better: bool, baseline: str) -> list[str]:
    """The test metric beside the untuned baseline's, and what to do when tuning lost to it.

    A linear probe on frozen sentence embeddings is a strong model; a user should hear it when
    the fine-tuned model did worse. A difference smaller than the score's own noise on this many
    test rows is not a loss, though (one article of a small test set, say): telling the user to
    train longer would send them after noise. For a score that is a share (0 to 1, higher
    better) the yardstick is one binomial standard error, sqrt(p(1-p)/n), of the baseline's score.
    """
    tuned, base = metrics["test"].get(metric), (metrics.get("baseline") or {}).get(metric)
    if not isinstance(tuned, float):
        return []
    if not isinstance(base, float):
        return [f"test {metric} {tuned:.4f}"]
    lines = [f"test {metric} {tuned:.4f} (untuned baseline, {baseline}: {base:.4f})"]
    if not ((tuned < base) if higher_better else (tuned > base)):
        return lines
    rows = metrics["test"].get("count")
    noise = (base * (1 - base) / rows) ** 0.5 if higher_better and 0 <= base <= 1 and rows else None
    if noise is not None and base - tuned <= noise:
        lines.append(f"note: the fine-tuned model is {base - tuned:.4f} below the untuned baseline on test {metric}, "
                     f"within the noise of {rows:,} test rows (one standard error: {noise:.4f}): no better than the "
                     "baseline here, which is the cheaper model (--method freeze trains only its head)")
    else:
        lines.append(f"warning: the fine-tuned model is worse on test {metric} than the untuned baseline; "
                     "train longer (--epochs), raise --lr, or try another --method (`tunesmith compare` trains several)")
    return lines


def learned_nothing(history: list[dict], metric: str, higher_better: bool, lr: float) -> list[str]:
    """A warning when the validation metric sat at zero at every evaluation: the model learned
    nothing (a tagger that collapsed to "no entity" everywhere scores entity F1 0 whatever the
    loss says). Both causes are a learning rate: too high collapses it, too low never moves it."""
    scores = [row[f"val_{metric}"] for row in history if isinstance(row.get(f"val_{metric}"), (int, float))]
    if not higher_better or not scores or any(score > 0 for score in scores):
        return []
    return [f"warning: validation {metric} was 0 at every evaluation: the model learned nothing. A learning rate "
            f"too high collapses it to one answer, one too low barely moves it: try --lr {lr / 4:g} (or --lr {lr * 4:g})"]


def _silent(*_) -> None:
    pass


def _checkpoint_activations(model, cfg) -> None:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UserError(f"--gradient-checkpointing: {cfg.resolved_model()} does not support it")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # With a frozen embedding layer (LoRA, freeze) the checkpointed blocks would get inputs
    # that need no gradient, and their adapters none either: make the inputs require one.
    model.enable_input_require_grads()


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    # Linux reports ru_maxrss in KiB: the peak resident memory of the whole process.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config_of_interrupted_run(path: str) -> tuple[TrainConfig, Run]:
    run = Run(Path(path))
    if not run.config_file.is_file():
        raise UserError(f"--resume {path}: not a run folder (no config.yaml)")
    if run.finished:
        raise UserError(f"--resume {path}: the run already finished; see {run.report_file}")
    cfg = run.settings()
    return cfg, run


def _unused_run_folder(cfg: TrainConfig) -> Run:
    name = cfg.name or f"{cfg.task.split('-')[0]}-{cfg.method}-{datetime.now():%Y%m%d-%H%M%S}"
    run = Run(Path(cfg.output) / name)
    if run.path.exists():
        raise UserError(f"{run.path}: already exists; choose another --name, or continue it with --resume {run.path}")
    return run


def _saved_splits(run: Run, cfg: TrainConfig) -> Splits:
    """The splits exactly as the interrupted run used them (not re-read from the source)."""
    parts = {name: run.split(name) for name in ("train", "val", "test")}
    return Splits(parts["train"], parts["val"], parts["test"], run.labels(), "text", "label")


def _export_model(method, model, tokenizer, run: Run) -> None:
    with atomic_dir(run.model_dir) as tmp:
        plain = method.export(model, run.path)
        plain.save_pretrained(str(tmp))  # safetensors by default
        tokenizer.save_pretrained(str(tmp))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: tunesmith train")
