"""`tunesmith tune DATA|CONFIG`: hyperparameter search over training runs (Optuna).

The study folder is named after the data or config (runs/tune-<name>), so running the same
command again continues the same study: finished trials are kept, a trial cut off by Ctrl-C or
kill -9 runs again. Selection sees validation only; the test split is scored once, for the
best trial, at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, Field

from tunesmith.commands.evaluate import EvalArgs, evaluate
from tunesmith.commands.flags import positional
from tunesmith.commands.train import train
from tunesmith.config import build_config, read_yaml_mapping
from tunesmith.durations import parse_duration
from tunesmith.errors import UserError
from tunesmith.io import write_text
from tunesmith.runs import Run
from tunesmith.search import report
from tunesmith import track
from tunesmith.track import mlflow_log, status_of
from tunesmith.search.space import default_space, grid, parse_space
from tunesmith.search.study import (StudySpec, best_config_yaml, best_run, keep_only,
                                    run_study, short, trial_rows, write_trials_csv)
from tunesmith.tasks import TASKS


class TuneArgs(BaseModel):
    """`tunesmith tune DATA|CONFIG`: the study's own settings (the training flags go in `training`)."""

    source: str = Field(description="training data, or a YAML config (with an optional search: block)",
                        json_schema_extra=positional(metavar="DATA|CONFIG"))
    trials: int = Field(20, ge=1, description="trials in the study, over every worker and restart")
    timeout: Optional[str] = Field(None, description="stop starting trials after this long, e.g. 30m, 2h")
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="tpe, random, or grid (every key needs "
                                                      "choices or a step)")
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median", description="stop trials whose validation metric trails the others' after an evaluation")
    n_jobs: int = Field(1, ge=1, description="worker processes sharing the study")
    storage: Optional[str] = Field(None, description="study storage URL (default: sqlite in the study folder); "
                                   "postgresql://... lets several machines share one study")
    study_folder: Optional[str] = Field(None, description="folder of the study (default: <output>/tune-<data or "
                                        "config name>)")
    keep: Literal["all", "best"] = Field("all", description="keep every trial's run folder or only the best one")
    sampler_seed: Optional[int] = Field(None, description="seed of the sampler, for a reproducible single-worker "
                                        "study")
    training: dict = Field({}, description="training settings given as flags", json_schema_extra={"hidden": True})


def tune(args: TuneArgs) -> Path:
    """Run (or continue) the study of a data file or YAML config, in `args.study_folder`
    (default: <output>/tune-<source name>); returns the best trial's run folder."""
    values, space_block = _base_values(args.source, args.training)
    if args.study_folder is None:
        folder = str(Path(build_config(values, args.source).output) / f"tune-{Path(args.source).stem}")
        args = args.model_copy(update={"study_folder": folder})
    return search(values, space_block, args)


def search(values: dict, space_block, args: TuneArgs, score_best: bool = True, log=print) -> Path:
    """A study over training `values` (the keys every trial shares) in `args.study_folder`; the
    space is `space_block` (a config's `search:` mapping), or the method's own when None. With
    `score_best=False` the winner's test split stays unscored (`auto` scores only the model it
    finally keeps)."""
    source, trials, sampler = args.source, args.trials, args.sampler
    cfg = build_config(values, source)  # the shared settings must be valid before any trial starts
    splits = TASKS[cfg.task].load_data(cfg)  # data that cannot load fails here once, not in every trial
    space = parse_space(space_block, source) if space_block is not None else default_space(cfg, len(splits.train))
    if sampler == "grid":
        grid(space)  # every key needs choices or a step: refused now, not after the first trial
    metric = cfg.resolved_metric()
    higher_better = TASKS[cfg.task].metrics_higher_is_better[metric]
    study_folder = Path(args.study_folder)
    spec = StudySpec(values=values, space=space, folder=study_folder, trials=trials,
                     timeout_s=parse_duration(args.timeout), sampler=sampler, pruner=args.pruner, storage=args.storage,
                     sampler_seed=args.sampler_seed, keep=args.keep, workers=args.n_jobs)
    log(f"study {study_folder} ({spec.storage_url.split('://')[0]}): {trials} trials of {cfg.task}, "
        f"searching {', '.join(space)}; selecting on val {metric}")
    track.check(cfg)  # --track with its package missing: refused before the first trial
    if "mlflow" in cfg.track:  # the study is an MLflow run; every trial's run is its child
        values["tracking_parent"] = mlflow_log.parent_run(cfg, study_folder, spec.trials_dir, study_folder.name)
    elif "wandb" in cfg.track:  # W&B: the trials are one group
        values["tracking_parent"] = study_folder.name
    try:
        study = run_study(spec, train, metric, "maximize" if higher_better else "minimize", log)
        best = _finish(spec, study, metric, higher_better, score_best, log)
    except BaseException as exc:
        if "mlflow" in cfg.track:
            mlflow_log.end_parent_run(cfg, study_folder, spec.trials_dir, status_of(exc))
        if isinstance(exc, KeyboardInterrupt):
            log(f"tune: interrupted; the same command continues the study in {study_folder}")
        raise
    if "mlflow" in cfg.track:
        mlflow_log.end_parent_run(cfg, study_folder, spec.trials_dir, "finished", {f"val_{metric}": study.best_value})
    return best


def _base_values(source: str, overrides: dict) -> tuple[dict, object]:
    """The settings every trial shares, and the `search:` block (None: the method's default)."""
    is_config = Path(source).suffix.lower() in (".yaml", ".yml")
    values = read_yaml_mapping(source) if is_config else {"data": source}
    space_block = values.pop("search", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if not values.get("data"):
        raise UserError(f"{source}: the config names no data; add 'data: FILE' or pass --data")
    return values, space_block


def _finish(spec: StudySpec, study, metric: str, higher_better: bool, score_best: bool, log) -> Path:
    """The trial table, the best trial scored on test (once), best.yaml and the report."""
    rows = trial_rows(study)
    write_trials_csv(spec.folder / "trials.csv", rows)
    best = best_run(study)
    if best is None:
        errors = sorted({r["error"] for r in rows if r["error"]})
        raise UserError(f"tune: no trial finished ({len(rows)} tried)" + (f"; first error: {errors[0]}" if errors else "")
                        + f"; see {spec.folder / 'trials.csv'}")
    run = Run(best)
    metrics = json.loads(run.metrics_file.read_text(encoding="utf-8"))
    if score_best and not metrics.get("test"):  # the first time the study ends with this winner
        log(f"scoring the best trial ({best.name}) on the test split, once ...")
        evaluate(EvalArgs(run=str(best)), out=lambda _: None)
        metrics = json.loads(run.metrics_file.read_text(encoding="utf-8"))
    write_text(spec.folder / "best.yaml", best_config_yaml(run.config(), metric, study.best_value))
    if spec.keep == "best":
        removed = keep_only(study, best)
        if removed:
            log(f"--keep best: removed {removed} other trial run folders")
    winner = {"trial": study.best_trial.number, "value": study.best_value, "params": study.best_trial.params,
              "test": metrics["test"], "history": run.history(), "run": best}
    write_text(spec.folder / "report.html", report.render(spec.name, rows, metric, higher_better,
                                                          report.importances(study), winner))
    _print_table(rows, metric, higher_better, log)
    test = metrics["test"].get(metric)
    log(f"best: trial {winner['trial']} val {metric} {study.best_value:.4f}"
        + (f", test {metric} {test:.4f}" if isinstance(test, float) else "") + f" ({best})")
    log(f"wrote {spec.folder / 'best.yaml'} (re-run: tunesmith train {spec.folder / 'best.yaml'}), "
        f"{spec.folder / 'trials.csv'} and {spec.folder / 'report.html'}")
    return best


def _print_table(rows: list[dict], metric: str, higher_better: bool, log, top: int = 10) -> None:
    finished = [r for r in rows if r["state"] == "complete"]
    finished.sort(key=lambda r: r["value"], reverse=higher_better)
    params = [c for c in (rows[0] if rows else {}) if c not in ("trial", "state", "value", "evaluations", "seconds",
                                                                 "run", "error")]
    log(f"{'trial':>5}  {'val ' + metric:>12}  {'seconds':>8}  " + "  ".join(f"{p:>10}" for p in params))
    for r in finished[:top]:
        cells = "  ".join(f"{short(r[p]):>10}" for p in params)
        log(f"{r['trial']:>5}  {r['value']:>12.4f}  {r['seconds'] or 0:>8.1f}  {cells}")
    others = {s: sum(r["state"] == s for r in rows) for s in ("pruned", "fail", "running")}
    if any(others.values()):
        log(", ".join(f"{n} {s}" for s, n in others.items() if n))

