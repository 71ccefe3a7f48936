"""An Optuna study whose trials are ordinary training runs.

    <study folder>/
      study.db      the study (SQLite): the same command continues it after Ctrl-C or kill -9,
                    and several workers (processes or machines) can share it
      trials/       one run folder per trial (trial-0000, ...), as `tunesmith train` writes them
      trials.csv    every trial: state, validation metric, time, parameters, run folder
      best.yaml     the best trial's config: `tunesmith train best.yaml` re-runs it as is
      report.html   optimisation history, parameter importances, the best run's curves

Trials see the validation split only: each reports its metric at every evaluation (so the
pruner can stop a bad trial after its first epoch) and the study picks the trial with the best
validation score. The caller scores the test split once, for the best trial.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunesmith.databases import connect_postgres, is_postgres_url, postgres_driver, redacted
from tunesmith.errors import Interrupted, UserError
from tunesmith.io import write_text
from tunesmith.search.space import Param, grid, grid_size, suggest

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
# A trial whose process died (kill -9, a lost machine) stops sending heartbeats; after the
# grace period the next worker to start a trial marks it failed and queues its parameters again.
HEARTBEAT_S, GRACE_S = 20, 60
STUDY_LOCK_KEY = 7_281_126  # the advisory lock workers on one PostgreSQL storage take while creating


@dataclass
class StudySpec:
    """What one study searches, and where it lives."""

    values: dict  # the training keys every trial shares (the config and flags, without `search`)
    space: dict[str, Param]
    folder: Path
    trials: int = 20  # trials in the study (finished and pruned), over every worker and restart
    timeout_s: float | None = None  # per worker: no new trial starts after this
    sampler: str = "tpe"
    pruner: str = "median"
    storage: str | None = None  # default: SQLite in the folder
    sampler_seed: int | None = None
    keep: str = "all"  # "all" trial runs, or only the "best" one
    workers: int = 1

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.folder / 'study.db').resolve()}"

    @property
    def name(self) -> str:
        return self.folder.resolve().name

    @property
    def trials_dir(self) -> Path:
        return self.folder / "trials"


def open_study(spec: StudySpec, direction: str, worker: int = 0):
    """The study in its storage: created on the first call, continued on every later one."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the study prints its own line per trial
    # Heartbeats (how a killed trial is found and retried) are marked experimental since 2.8.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    url = spec.storage_url
    spec.folder.mkdir(parents=True, exist_ok=True)
    # Workers started together would both create the storage's tables (and the study) and one
    # would fail: whoever comes first creates them while the others wait, on a lock in the folder
    # (workers on one machine) or, for PostgreSQL, in the database (workers on several machines).
    with _database_lock(url) if is_postgres_url(url) else _folder_lock(spec.folder):
        storage = _storage(url)
        return _create_or_load(spec, storage, direction, worker)


@contextmanager
def _folder_lock(folder: Path):
    fd = os.open(folder / ".study.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock, as does the process dying


@contextmanager
def _database_lock(url: str):
    """PostgreSQL's advisory lock, held on a connection of its own while the tables and the study
    are made; the server releases it if the process dies."""
    with connect_postgres(url, "--storage") as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (STUDY_LOCK_KEY,))
        yield


def _storage(url: str):
    import optuna

    # Workers share one SQLite file: wait for its write lock instead of failing on "database is locked".
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite:") else None
    try:
        return optuna.storages.RDBStorage(
            sqlalchemy_url(url), engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))
    except Exception as exc:  # a wrong URL, a missing driver, a server away
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"--storage {redacted(url)}: cannot open it ({type(exc).__name__}: {redacted(reason)})") from None


def sqlalchemy_url(url: str) -> str:
    """A plain postgresql:// URL names SQLAlchemy's default driver, psycopg2; tunesmith[postgres]
    installs psycopg 3, so the URL is pointed at it when psycopg2 is absent."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg2") is None:
        postgres_driver(url, "--storage")  # one line saying how to install it, when it is missing too
        return f"postgresql+psycopg{sep}{rest}"
    return url


def _create_or_load(spec: StudySpec, storage, direction: str, worker: int):
    import optuna

    seed = None if spec.sampler_seed is None else spec.sampler_seed + worker  # workers must not draw alike
    if spec.sampler == "grid":
        sampler = optuna.samplers.GridSampler(grid(spec.space), seed=seed)
    elif spec.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        # Few trials is the common case here: start modelling after 5 random ones, not 10.
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, max(1, spec.trials // 3)))
    pruner = {
        # A trial is stopped when its metric after an evaluation is worse than the median of
        # earlier trials at the same evaluation; the first 3 trials always finish.
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto"),
        "none": lambda: optuna.pruners.NopPruner(),
    }[spec.pruner]()
    study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=spec.name,
                                direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise UserError(f"{redacted(spec.storage_url)}: study {spec.name} was created to {study.direction.name.lower()} its metric, "
                        f"this config's metric needs {direction}; use another study folder")
    return study


def counted(study) -> int:
    """Trials that count towards --trials: finished or pruned (failed ones are retried)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class _Reporter:
    """Hands each validation result of a trial's run to Optuna, and stops the run when the
    pruner says the trial will not catch up."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.evaluations = trial, metric, 0

    def __call__(self, metrics: dict) -> None:
        import optuna

        self.evaluations += 1
        value = metrics.get(self.metric)
        if not isinstance(value, float) or math.isnan(value):
            return
        self.trial.report(value, step=self.evaluations)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"val {self.metric} {value:.4f} after evaluation {self.evaluations}")


def run_worker(spec: StudySpec, train: Callable, metric: str, direction: str, worker: int = 0,
               log: Callable[[str], None] = print):
    """Run trials until the study has `spec.trials` of them, or this worker's timeout; returns
    the study."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from tunesmith.config import build_config

    study = open_study(spec, direction, worker)
    if counted(study) >= spec.trials:
        return study

    def objective(trial) -> float:
        values = suggest(trial, spec.space, spec.values)
        values.update(output=str(spec.trials_dir), name=f"trial-{trial.number:04d}")
        cfg = build_config(values, f"trial {trial.number}")
        run_dir = spec.trials_dir / values["name"]
        trial.set_user_attr("run", str(run_dir))
        shown = ", ".join(f"{k}={short(v)}" for k, v in trial.params.items())
        log(f"trial {trial.number}: {shown}")
        try:
            run = train(cfg, log=quiet_trial_log, on_evaluate=_Reporter(trial, metric), score_test=False)
        except optuna.TrialPruned:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a pruned run is not resumed
            raise
        except Interrupted:
            raise KeyboardInterrupt from None  # Optuna marks the trial failed; the same command continues
        except UserError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        metrics = json.loads(run.metrics_file.read_text(encoding="utf-8"))
        return float(metrics["val_best"][metric])

    def stop_on_failures(study, trial) -> None:
        # Every trial failing (a bad key in the base config, data that cannot load) must not
        # spin forever: after as many failures as trials asked for, the study stops.
        failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if len(failed) >= max(3, spec.trials):
            study.stop()

    def announce(study, trial) -> None:
        if trial.state == TrialState.COMPLETE:
            log(f"trial {trial.number}: val {metric} {trial.value:.4f}"
                + (" (best so far)" if study.best_trial.number == trial.number else ""))
        elif trial.state == TrialState.PRUNED:
            log(f"trial {trial.number}: pruned after evaluation {trial.last_step}")
        elif trial.state == TrialState.FAIL:
            log(f"trial {trial.number}: failed: {trial.user_attrs.get('error', 'see above')}")

    n_trials = spec.trials - counted(study)
    if spec.sampler == "grid":
        n_trials = min(n_trials, grid_size(spec.space))
    study.optimize(objective, n_trials=n_trials, timeout=spec.timeout_s, catch=(UserError,),
                   callbacks=[MaxTrialsCallback(spec.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                              stop_on_failures, announce])
    return study


def _worker_process(spec: StudySpec, train: Callable, metric: str, direction: str, worker: int) -> None:
    """A spawned worker: its share of the CPU's threads, and its own trials."""
    import torch
    import transformers

    # A fresh interpreter: keep library chatter (weight-loading bars) out of the study's log,
    # as the command line does for the main process.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec.workers))
    run_worker(spec, train, metric, direction, worker, log=lambda line: print(f"[worker {worker}] {line}", flush=True))


def run_study(spec: StudySpec, train: Callable, metric: str, direction: str, log=print):
    """Run the study with `spec.workers` processes on its storage; returns the study."""
    import multiprocessing

    import torch

    if spec.workers == 1:
        return run_worker(spec, train, metric, direction, 0, log)
    # Extra workers are processes, not threads: each trains with its own torch state.
    context = multiprocessing.get_context("spawn")
    others = [context.Process(target=_worker_process, args=(spec, train, metric, direction, i))
              for i in range(1, spec.workers)]
    for process in others:
        process.start()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec.workers))
    try:
        study = run_worker(spec, train, metric, direction, 0, log)
    finally:
        for process in others:
            process.join()
    failed = [p.exitcode for p in others if p.exitcode]
    if failed:
        log(f"warning: {len(failed)} worker process(es) stopped with an error (exit {failed[0]}); "
            "their unfinished trials are retried by the next run of this command")
    return study  # its storage is shared: it reads the other workers' trials too


def trial_rows(study) -> list[dict]:
    """One row per trial, for trials.csv and the report."""
    names = sorted({name for t in study.trials for name in t.params})
    rows = []
    for t in study.trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     "evaluations": t.last_step, "seconds": None if seconds is None else round(seconds, 1),
                     **{name: t.params.get(name) for name in names}, "run": t.user_attrs.get("run", ""),
                     "error": t.user_attrs.get("error", "")})
    return rows


def write_trials_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else ["trial", "state", "value"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def best_run(study) -> Path | None:
    """The best finished trial's run folder (chosen on validation), or None."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return Path(study.best_trial.user_attrs["run"])


def best_config_yaml(run_config: dict, metric: str, value: float) -> str:
    """best.yaml: the best trial's resolved config as a new run (no name, runs/ as output)."""
    import yaml

    values = {k: v for k, v in run_config.items() if k not in ("name", "resume", "tracking_parent")}
    values["output"] = "runs"
    header = (f"# The best trial of a `tunesmith tune` study (val {metric} {value:.4f}).\n"
              "# Re-run it as is: tunesmith train best.yaml\n")
    return header + yaml.safe_dump(values, sort_keys=False, allow_unicode=True)


def keep_only(study, best: Path | None) -> int:
    """--keep best: remove the run folders of every ended trial except the best. Running trials
    (another worker's) are left alone. Returns how many folders were removed."""
    from optuna.trial import TrialState

    removed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        folder = Path(t.user_attrs.get("run", ""))
        if t.user_attrs.get("run") and folder != best and folder.is_dir():
            shutil.rmtree(folder)
            removed += 1
    return removed


def short(value) -> str:
    """A parameter value in a log line or table: floats to 3 significant digits."""
    return "" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def quiet_trial_log(line: str) -> None:
    """The log of a run trained inside a search (a trial, an auto rung)."""
    # A trial's own progress lines would bury the study's; its warnings still matter.
    if line.startswith("warning"):
        print(line, flush=True)
