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
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import torch

from tunesmith import models, quality
from tunesmith.config import DEFAULT_EPOCHS, MIN_DEFAULT_STEPS, TrainConfig, config_to_yaml_dict
from tunesmith.data.augment import augment_examples
from tunesmith.data.labeled import write_split
from tunesmith.data.long_text import LongText
from tunesmith.data.splits import Splits
from tunesmith.errors import Interrupted, UserError
from tunesmith.evaluate import report
from tunesmith.inference import Predictor
from tunesmith.io import atomic_dir, write_json, write_text, write_yaml
from tunesmith.methods import METHODS, count_parameters, load_tuned
from tunesmith import runs as run_status
from tunesmith.runs import Run, training_lock
from tunesmith.tasks import TASKS
from tunesmith.tasks.mean_pool import trained_pooling
from tunesmith import track
from tunesmith.train import budget, checkpoint, continual, distributed
from tunesmith.train.loop import FitResult, LoopState, fit
from tunesmith.train.objective import training_objective


def train(cfg: TrainConfig, log=print, on_evaluate=None, score_test: bool = True) -> Run:
    """Train one run. `on_evaluate(metrics)` sees every validation result as it comes (a
    `tune` trial reports it, and may stop the run by raising). With `score_test=False` (a tune
    trial: selection sees validation only) neither the baseline nor the model touches the test
    split; `tunesmith eval RUN` scores it later."""
    processes = distributed.processes()  # several under `accelerate launch`; only the main one writes
    main = processes.is_main_process
    if not main:
        log = _silent
    resuming = cfg.resume is not None
    with ExitStack() as held:
        if resuming:
            cfg, run = _config_of_interrupted_run(cfg.resume)
            if main:
                held.enter_context(training_lock(run))  # before any work: a second resume is refused now
        return _train(cfg, run if resuming else None, processes, held, log, on_evaluate, score_test)


def _train(cfg: TrainConfig, run: Run | None, processes, held: ExitStack, log, on_evaluate, score_test) -> Run:
    main, resuming = processes.is_main_process, run is not None
    if not resuming:
        # A taken name fails now, not after loading everything; the others use the main's folder.
        run = Run(Path(distributed.from_main(str(_unused_run_folder(cfg).path) if main else None)))
    task, method = TASKS[cfg.task], METHODS[cfg.method]
    method.check(cfg, task)  # e.g. qlora without a GPU: refused before any data or model is loaded
    track.check(cfg)  # --track mlflow without mlflow installed: refused now too
    earlier = continual.prior_run(cfg) if cfg.from_run else None
    if earlier is not None:
        cfg.model = str(earlier.model_dir.resolve())  # its model and tokenizer are the start
        log(f"continual learning: starting from {earlier.path} ({len(earlier.labels())} labels)")

    # 1. Data and model, validated before anything is written.
    splits = _saved_splits(run, cfg) if resuming else task.load_data(cfg)
    if splits.pair_col and not cfg.text_pair_col:
        cfg.text_pair_col = splits.pair_col  # recorded, so eval and predict read pairs the same way
    for note in splits.notes:
        log(note)
    if cfg.epochs is None:  # the default depends on how many steps the data makes (recorded in config.yaml)
        cfg.epochs = cfg.resolved_epochs(len(splits.train))
        if cfg.epochs != DEFAULT_EPOCHS:
            log(f"epochs: {cfg.epochs:g}, so that {len(splits.train):,} training rows make at least "
                f"{MIN_DEFAULT_STEPS} optimizer steps (--epochs sets it)")
    if cfg.lr is None:  # some methods' default follows the run's length (recorded in config.yaml)
        cfg.lr = cfg.resolved_lr(len(splits.train))
        if task.lr_by_steps and cfg.lr != method.default_lr:
            log(f"lr: {cfg.lr:.2g}, {cfg.method}'s rate for {cfg.training_steps(len(splits.train)):,} optimizer "
                f"steps (--lr sets it)")
    chosen = None if resuming or earlier is not None else models.choose_for_data(cfg, task, splits.train.texts)
    if chosen:
        log(chosen)
    source = models.resolve(cfg.resolved_model())
    tokenizer = task.load_processor(cfg.resolved_model(), cfg)  # a tokenizer, or image preprocessing
    for note in models.fit_max_length(cfg, source, tokenizer):
        log(f"note: {note}")
    findings = task.check(splits, tokenizer, cfg.resolved_max_length())
    for warning in findings.warnings:
        log(f"warning: {warning}")
    checked = None if resuming else _quality(cfg, task, splits, source, tokenizer, score_test, log)
    if not resuming:  # a resumed run keeps its batches: its checkpoints count steps of them
        for line in budget.plan(cfg, task, source, findings.facts.get("token_lengths"), len(splits.train), adapt=True):
            log(line)
    torch.manual_seed(cfg.seed)  # the head's initialisation is part of what the seed fixes
    if earlier is not None:  # its labels keep their class ids; new ones come after them
        splits.labels = continual.extended_labels(earlier.labels(), splits.labels)
        model = load_tuned(task, str(earlier.model_dir))
    else:
        pooling = _pooling(cfg, task, method, source)
        model = task.build_model(source, splits.labels, pooling)

    # 2. The run folder, with the resolved config that re-runs it and the exact splits.
    if not resuming and main:
        run.path.mkdir(parents=True)
        try:
            write_yaml(run.config_file, config_to_yaml_dict(cfg))
            write_json(run.labels_file, splits.labels)
            for name in ("train", "val", "test"):
                write_split(run.data_dir / f"{name}.jsonl", getattr(splits, name))
            if checked is not None:
                checked.write(run.path / "quality")
                write_json(run.path / "quality" / "facts.json", checked.facts)
        except BaseException:
            shutil.rmtree(run.path, ignore_errors=True)
            raise
        held.enter_context(training_lock(run))
        log(f"run folder: {run.path}")
    processes.wait_for_everyone()

    tracking = track.Tracking(run.path, cfg, log) if main else None
    try:
        done = _fine_tune_and_evaluate(run, cfg, task, method, splits, tokenizer, model, resuming, log, earlier,
                                       on_evaluate, score_test, tracking)
    except BaseException as exc:
        if main:
            tracking.close(track.status_of(exc))
        if isinstance(exc, UserError) and not resuming and main and not run.checkpoints.exists():
            # Refused before any training step (a method that cannot adapt this model): nothing
            # in the folder is worth keeping, and bad input never leaves one behind.
            shutil.rmtree(run.path, ignore_errors=True)
        elif main:
            run_status.record_ending(run, exc)  # what the dashboard shows: failed or interrupted
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(run.path) from None
        raise
    if tracking is not None:
        tracking.close("finished")
    return done


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


def _fine_tune_and_evaluate(run: Run, cfg: TrainConfig, task, method, splits: Splits, tokenizer, model,
                            resuming: bool, log, earlier: Run | None = None, on_evaluate=None,
                            score_test: bool = True, tracking: track.Tracking | None = None) -> Run:
    """Steps 3-7: everything that happens inside the run folder."""
    examples, features = _encode_splits(cfg, task, splits, tokenizer, log, earlier)
    if task.score_reference is not None:  # DPO: the reference's log-probabilities, before any tuning
        log("scoring every pair with the reference (the starting model) ...")
        task.score_reference(model, features)

    # 4. The untuned baseline, from the pristine pretrained encoder (once per run).
    main = distributed.processes().is_main_process
    if cfg.baseline and score_test and task.has_baseline and main and not run.baseline_file.is_file():
        log("baseline: scoring the untuned model on the test split ...")
        baseline = task.baseline(model, features["train"], features["test"], examples["train"].labels,
                                 splits.test.labels, splits.labels, cfg.seed)
        write_json(run.baseline_file, baseline)

    # 5. Fine-tune (continual learning: from the earlier run's model, its head extended).
    started_as_probe = False  # the head starts as the baseline's probe: step 0 is the baseline
    # A run resumed before its first checkpoint starts over, so its head starts as a fresh one does.
    from_checkpoint = resuming and checkpoint.find(run.checkpoints / "last") is not None
    if task.start_head is not None and not from_checkpoint and earlier is None:
        note = task.start_head(model, features["train"], examples["train"].labels, splits.labels, cfg.seed)
        if note:
            log(note)
            started_as_probe = True
    model, ewc = _prepare_model(model, cfg, task, method, splits, tokenizer, earlier, log)
    params = count_parameters(model)
    log(f"method {cfg.method}: {params['trainable']:,} of {params['total']:,} parameters train "
        f"({params['trainable_pct']:.2f}%), lr {cfg.resolved_lr():g}")

    def fit_head(m) -> None:  # few-shot: the head is fitted on the training split, outside the loop
        if method.fit_head is not None:
            method.fit_head(m, features["train"], examples["train"].labels, splits.labels)

    def validate(m) -> dict:
        fit_head(m)
        return task.metrics(splits.val.labels, task.predict(m, features["val"]), splits.labels)

    def evaluate(m) -> dict:
        metrics = validate(m)
        if on_evaluate is not None:
            on_evaluate(metrics)
        return metrics

    metric = cfg.resolved_metric()
    loss = training_objective(cfg, task, method, tokenizer, examples["train"].labels, splits.labels, ewc)
    if method.trains:
        result = fit(model, features["train"], evaluate, cfg, run.path, metric, task.metrics_higher_is_better[metric],
                     resume=resuming, log=log, compute_loss=loss, on_step=method.on_step, tracking=tracking,
                     evaluate_start=validate if started_as_probe else None)
        if not main:  # the main process keeps, exports and tests the model
            return run
        if result.state.best_step == 0 and not cfg.average_last:
            log(f"note: no step beat the starting model (the untuned probe) on validation {metric}, so the run keeps "
                f"it; for more from training try --lr {cfg.resolved_lr() / 4:g} or --lr {cfg.resolved_lr() * 4:g}, or "
                "more data")
        _keep_best(run, cfg, model, log)
        fit_head(model)
    else:  # zero-shot: nothing trains; the validation score is still reported
        log(f"method {cfg.method}: no training")
        result = FitResult(LoopState(best_metric=evaluate(model)[metric], best_step=0), 0, "no")
    tuned = task.tune_on_validation(model, features["val"], splits.val.labels, splits.labels)
    _export_model(method, model, tokenizer, run)
    metrics = _test_metrics(run, cfg, task, splits, examples, result, metric, tuned, params, earlier, log, score_test)
    history = run.history()
    write_text(run.report_file, report.render(f"tunesmith run {run.path.name}", run.config(), metrics,
                                              history, splits.labels))
    write_json(run.metrics_file, metrics)  # last: its presence marks the run finished
    if tracking is not None:  # settings, test metrics, report and model to the trackers
        tracking.finish(run.config(), metrics)
    for line in versus_baseline(metrics, metric, task.metrics_higher_is_better[metric], task.baseline_name):
        log(line)
    for line in learned_nothing(history, metric, task.metrics_higher_is_better[metric], cfg.resolved_lr()):
        log(line)
    return run


def _encode_splits(cfg: TrainConfig, task, splits: Splits, tokenizer, log, earlier: Run | None):
    """3. Features (token ids cached on disk) with targets, for every split. Augmentation
    touches the training split only, never val or test: text edits (EDA) here, and the
    task's own (image flips and crops) inside encode."""
    examples = {"train": splits.train, "val": splits.val, "test": splits.test}
    if earlier is not None and cfg.replay:  # continual learning: rehearse some of the old training data
        examples["train"] = continual.with_replay(splits.train, earlier.split("train"), cfg.replay, cfg.seed)
        log(f"replay: {len(examples['train']) - len(splits.train):,} old training examples mixed in")
    if cfg.augment_copies:
        examples["train"] = augment_examples(splits.train, cfg.augment_copies, cfg.augment_ops, cfg.augment_rate,
                                             cfg.seed)
        log(f"augmentation: {len(splits.train):,} training examples + {len(examples['train']) - len(splits.train):,} "
            f"edited copies ({', '.join(cfg.augment_ops)})")
    features = {name: task.encode(tokenizer, part.texts, part.labels, splits.labels, cfg.resolved_max_length(),
                                  augment=name == "train", long_text=LongText.of(cfg))
                for name, part in examples.items()}
    return examples, features


def _prepare_model(model, cfg: TrainConfig, task, method, splits: Splits, tokenizer, earlier: Run | None, log):
    """The model the loop trains (the method applied; continual learning: the earlier run's
    head extended, EWC's penalty bound to it), and the EWC penalty or None."""
    ewc = None
    if earlier is not None:
        if cfg.ewc_lambda:
            log("EWC: weighing each weight's importance on the old training data ...")
            old_train = earlier.split("train")
            sample = old_train.subset(range(min(len(old_train), continual.FISHER_SAMPLES)))
            ewc = continual.EWC(model, task.encode(tokenizer, sample.texts, sample.labels, splits.labels,
                                                   cfg.resolved_max_length()), cfg.ewc_lambda)
        model = continual.extend_head(model, earlier.labels(), splits.labels)
    if cfg.gradient_checkpointing:
        _checkpoint_activations(model, cfg)
    model = method.apply(model, cfg, task)
    if ewc is not None:
        ewc.bind(model)
    return model, ewc


def _keep_best(run: Run, cfg: TrainConfig, model, log) -> None:
    """6. The best checkpoint (chosen on validation, never on test) into `model`, or the
    average of the last k evaluations' weights."""
    kept = sorted(run.checkpoints.glob("eval-*"))[-cfg.average_last:] if cfg.average_last else []
    if kept:
        log(f"averaging the weights of the last {len(kept)} evaluations ({', '.join(k.name for k in kept)})")
        checkpoint.average_weights(kept, model)
    else:
        checkpoint.load_weights(checkpoint.find(run.checkpoints / "best"), model)


def _test_metrics(run: Run, cfg: TrainConfig, task, splits: Splits, examples: dict, result: FitResult, metric: str,
                  tuned: dict, params: dict, earlier: Run | None, log, score_test: bool = True) -> dict:
    """7. The run's metrics: what training cost, the best validation score, and (unless
    `score_test` is False: the test entry then stays empty, and `tunesmith eval RUN` fills it)
    the test split scored from the saved model."""
    scored = _score_test(run, cfg, task, splits, examples, metric, earlier, log) if score_test else {"test": {}}
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
        "data_quality": json.loads(facts.read_text()) if (facts := run.path / "quality" / "facts.json").is_file() else None,
        **scored,  # predict_samples_per_second, and continual's forgetting
    }


def _score_test(run: Run, cfg: TrainConfig, task, splits: Splits, examples: dict, metric: str, earlier: Run | None,
                log) -> dict:
    """Test metrics from the saved model, exactly as `eval` and `predict` will load it; for
    continual learning, the old test split scored again."""
    predictor = Predictor.from_run(run)
    started = time.perf_counter()
    test_outputs = predictor.predict(splits.test.texts)
    predict_seconds = time.perf_counter() - started
    test_metrics = task.metrics(splits.test.labels, test_outputs, splits.labels)
    if task.generative:  # generative tasks: answers to held-out prompts vs references
        log("answering test prompts for exact match and ROUGE-L ...")
        test_metrics.update(task.answer_metrics(predictor.model, predictor.tokenizer, splits.test.texts))
    scored = {"test": test_metrics, "predict_samples_per_second": len(splits.test) / max(predict_seconds, 1e-9)}
    if earlier is not None:  # forgetting: the old test split, as the old run scored it and now
        old_test = earlier.split("test")
        after = task.metrics(old_test.labels, predictor.predict(old_test.texts), splits.labels)
        scored["continual"] = {
            "from": str(earlier.path), "replayed": len(examples["train"]) - len(splits.train), "ewc_lambda": cfg.ewc_lambda,
            "new_labels": splits.labels[len(earlier.labels()):],
            "old_test": continual.forgetting(continual.old_metrics(earlier), after, metric,
                                             task.metrics_higher_is_better[metric])}
    return scored


def versus_baseline(metrics: dict, metric: str, higher_better: bool, baseline: str) -> list[str]:
    """The test metric beside the untuned baseline's, and what to do when tuning lost to it.

    A linear probe on frozen sentence embeddings is a strong model (on banking77 it beats 3
    epochs of full fine-tuning); a user should hear it when the fine-tuned model did worse. A
    difference smaller than the score's own noise on this many test rows is not a loss, though:
    BBC News' 212 test articles put a probe at 0.9723 macro-F1 and LoRA at 0.9673, one article
    apart, where telling the user to train longer would send them after noise. For a score that
    is a share (0 to 1, higher better) the yardstick is one binomial standard error,
    sqrt(p(1-p)/n), of the baseline's score.
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
