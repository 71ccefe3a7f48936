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
from tunesmith.io import inside
from tunesmith.runs import Run

DEPTH = 4  # runs/<study>/trials/<trial>/ is three levels: one to spare
SKIP = {"checkpoints", "model", "data", "adapter", "tensorboard", "wandb", "quality", "mlartifacts", "onnx"}


def find_runs(root: Path) -> list[Run]:
    found = []

    def walk(folder: Path, depth: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and p.name not in SKIP
                              and not p.name.startswith("."))
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
    """The run with this id (its path under the runs folder); nothing outside the folder, and
    no folder reached through a symbolic link."""
    path = root / run_id
    if not inside(root, path) or readable(root, path / "config.yaml") is None:
        raise UserError(f"no run {run_id!r} under {root}")
    return Run(path.resolve())


def readable(root: Path, path: Path) -> Path | None:
    """`path` when it is a plain file inside the runs folder, else None. A run folder may come
    from someone else: a symbolic link in it (history.jsonl -> /etc/passwd) must not make the
    dashboard read, and serve, a file from elsewhere."""
    try:
        if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(root.resolve()):
            return None
    except (OSError, ValueError):
        return None
    return path


def read_text(root: Path, path: Path) -> str | None:
    safe = readable(root, path)
    try:
        return safe.read_text(encoding="utf-8") if safe is not None else None
    except (OSError, UnicodeDecodeError):
        return None


def read_from(root: Path, path: Path, offset: int) -> bytes:
    """The bytes of `path` after `offset` (none when it is not readable)."""
    safe = readable(root, path)
    if safe is None:
        return b""
    try:
        with open(safe, "rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


def history(root: Path, run: Run) -> list[dict]:
    """The run's history rows (as `Run.history` reads them), if the file is readable."""
    return run_files.history_rows(read_text(root, run.history_file) or "")


def _read_json(root: Path, path: Path):
    try:
        return json.loads(read_text(root, path) or "null")
    except json.JSONDecodeError:
        return None


def _config(root: Path, run: Run) -> dict:
    try:
        config = yaml.safe_load(read_text(root, run.config_file) or "")
    except yaml.YAMLError:
        return {}
    return config if isinstance(config, dict) else {}


def summary(root: Path, run: Run) -> dict:
    """One row of the runs table."""
    config, metrics = _config(root, run), _read_json(root, run.metrics_file) or {}
    metric = str(config.get("metric") or "macro_f1")
    test, val_best = metrics.get("test") or {}, metrics.get("val_best") or {}
    training = metrics.get("training") or {}
    steps, best_so_far = _progress(root, run, metric, _higher_is_better(config.get("task"), metric))
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


def _progress(root: Path, run: Run, metric: str, higher_better: bool) -> tuple[int, float | None]:
    """(last step, best validation score so far) from history.jsonl, re-read only when it changed:
    the table refreshes every few seconds, and a long run's history has many thousand lines."""
    try:
        stat = run.history_file.lstat()
    except OSError:
        return 0, None
    key, stamp = str(run.history_file), (stat.st_size, stat.st_mtime_ns, metric)
    if key in _PROGRESS and _PROGRESS[key][0] == stamp:
        return _PROGRESS[key][1]
    rows = history(root, run)
    scores = [row[f"val_{metric}"] for row in rows if isinstance(row.get(f"val_{metric}"), (int, float))]
    best = (max(scores) if higher_better else min(scores)) if scores else None
    _PROGRESS[key] = (stamp, (rows[-1].get("step", 0) if rows else 0, best))
    return _PROGRESS[key][1]


def details(root: Path, run: Run) -> dict:
    """A run's page: its row, settings, curves, test results, baseline and how it ended."""
    metrics = _read_json(root, run.metrics_file) or {}
    labels = _read_json(root, run.labels_file) or []
    ending = _read_json(root, run.path / run_files.ENDING)
    return {
        **summary(root, run),
        "config": _config(root, run),
        "labels": labels,
        "history": history(root, run),
        "test": metrics.get("test") or {},
        "baseline": _read_json(root, run.baseline_file) or metrics.get("baseline") or {},
        "val_best": metrics.get("val_best") or {},
        "ending": ending if ending and not run.finished else None,
        "report": readable(root, run.report_file) is not None,
    }
