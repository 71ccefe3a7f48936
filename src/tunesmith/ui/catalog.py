"""The runs under a runs folder, as the dashboard lists and shows them.

A run is any folder with a config.yaml below the runs folder (tune studies keep their trials two
levels down), found up to DEPTH levels deep. Its id is its path relative to the runs folder.
Nothing here loads a model: the table reads each run's small JSON and YAML files.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tunesmith import runs as run_files
from tunesmith.errors import UserError
from tunesmith.runs import Run

DEPTH = 4  # runs/<study>/trials/<trial>/ is three levels: one to spare
SKIP = {"checkpoints", "model", "data", "adapter", "tensorboard", "wandb", "quality", "mlartifacts", "onnx"}


def find_runs(root: Path) -> list[Run]:
    found = []

    def walk(folder: Path, depth: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in SKIP and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            if (child / "config.yaml").is_file():
                found.append(Run(child))
            elif depth < DEPTH:
                walk(child, depth + 1)

    walk(root, 1)
    return found


def open_run(root: Path, run_id: str) -> Run:
    """The run with this id (its path under the runs folder); nothing outside the folder."""
    path = (root / run_id).resolve()
    if not path.is_relative_to(root.resolve()) or not (path / "config.yaml").is_file():
        raise UserError(f"no run {run_id!r} under {root}")
    return Run(path)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _config(run: Run) -> dict:
    try:
        return yaml.safe_load(run.config_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def summary(root: Path, run: Run) -> dict:
    """One row of the runs table."""
    config, metrics = _config(run), _read_json(run.metrics_file) or {}
    metric = config.get("metric") or "macro_f1"
    test, val_best = metrics.get("test") or {}, metrics.get("val_best") or {}
    training = metrics.get("training") or {}
    steps, best_so_far = _progress(run, metric, _higher_is_better(config.get("task"), metric))
    value, split = (test.get(metric), "test") if isinstance(test.get(metric), (int, float)) else (val_best.get(metric), "val")
    if value is None:  # a running or interrupted run: its best validation score so far
        value, split = best_so_far, "val"
    return {
        "id": run.path.resolve().relative_to(root.resolve()).as_posix(),
        "name": run.path.name,
        "task": config.get("task", ""),
        "method": config.get("method", ""),
        "model": Path(str(config.get("model", ""))).name,
        "data": Path(str(config.get("data", ""))).name,
        "metric": metric,
        "value": value,
        "split": split,
        "seconds": training.get("train_seconds"),
        "trainable_pct": (metrics.get("parameters") or {}).get("trainable_pct"),
        "status": run_files.status(run),
        "steps": steps,
        "started": run.config_file.stat().st_mtime,
    }


_PROGRESS: dict[str, tuple] = {}  # history file -> ((size, mtime), (last step, best val score))


def _higher_is_better(task: str | None, metric: str) -> bool:
    from tunesmith.tasks import TASKS

    return TASKS[task].metrics_higher_is_better.get(metric, True) if task in TASKS else True


def _progress(run: Run, metric: str, higher_better: bool) -> tuple[int, float | None]:
    """(last step, best validation score so far) from history.jsonl, re-read only when it changed:
    the table refreshes every few seconds, and a long run's history has many thousand lines."""
    try:
        stat = run.history_file.stat()
    except OSError:
        return 0, None
    key, stamp = str(run.history_file), (stat.st_size, stat.st_mtime_ns, metric)
    if key in _PROGRESS and _PROGRESS[key][0] == stamp:
        return _PROGRESS[key][1]
    history = run.history()
    scores = [row[f"val_{metric}"] for row in history if isinstance(row.get(f"val_{metric}"), (int, float))]
    best = (max(scores) if higher_better else min(scores)) if scores else None
    _PROGRESS[key] = (stamp, (history[-1].get("step", 0) if history else 0, best))
    return _PROGRESS[key][1]


def details(root: Path, run: Run) -> dict:
    """A run's page: its row, settings, curves, test results, baseline and how it ended."""
    metrics = _read_json(run.metrics_file) or {}
    labels = _read_json(run.labels_file) or []
    ending = _read_json(run.path / run_files.ENDING)
    return {
        **summary(root, run),
        "config": _config(run),
        "labels": labels,
        "history": run.history(),
        "test": metrics.get("test") or {},
        "baseline": _read_json(run.baseline_file) or metrics.get("baseline") or {},
        "val_best": metrics.get("val_best") or {},
        "ending": ending if ending and not run.finished else None,
        "report": run.report_file.is_file(),
    }
