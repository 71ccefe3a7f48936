"""The run folder: where everything about one fine-tuning run lives.

    runs/<name>/
      config.yaml      fully resolved config (re-runnable as is)
      labels.json      label names, position = class id
      data/            the train / val / test splits exactly as used (JSONL)
      checkpoints/     last/ and best/ (resumable; safetensors + JSON), eval-*/ with --average-last
      history.jsonl    one line per logged step and evaluation
      model/           the tuned model in Hugging Face format (LoRA merged in)
      adapter/         LoRA runs: the PEFT adapter alone
      baseline.json    the untuned baseline (linear head on frozen features)
      metrics.json     final metrics; written last, so its presence means "finished"
      report.html      curves, confusion matrix, per-class table, baseline vs tuned
      ending.json      a run that stopped without finishing: failed or interrupted, and the error
      tracking.json    --track: the MLflow / W&B run ids, so a resume continues them
      compression.json compressed runs (quantize, prune, distill): the source run, every step
                       from the trained run to this one, the backend that runs it, the cost table
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from tunesmith.errors import UserError
from tunesmith.io import exclusive, lines


@dataclass(frozen=True)
class Run:
    path: Path

    config_file = property(lambda self: self.path / "config.yaml")
    labels_file = property(lambda self: self.path / "labels.json")
    data_dir = property(lambda self: self.path / "data")
    checkpoints = property(lambda self: self.path / "checkpoints")
    history_file = property(lambda self: self.path / "history.jsonl")
    model_dir = property(lambda self: self.path / "model")
    baseline_file = property(lambda self: self.path / "baseline.json")
    metrics_file = property(lambda self: self.path / "metrics.json")
    report_file = property(lambda self: self.path / "report.html")
    compression_file = property(lambda self: self.path / "compression.json")

    @property
    def finished(self) -> bool:
        return self.metrics_file.is_file()

    def config(self) -> dict:
        """config.yaml as written (for copying it); read settings with `settings()`."""
        return yaml.safe_load(self.config_file.read_text(encoding="utf-8"))

    def settings(self):
        """The run's settings as a typed TrainConfig, migrated from older layouts."""
        from tunesmith.config import run_settings

        return run_settings(self.config(), str(self.config_file))

    def labels(self) -> list[str]:
        return json.loads(self.labels_file.read_text(encoding="utf-8"))

    def split(self, name: str):
        """The run's own train / val / test examples, exactly as it used them."""
        from tunesmith.data.labeled import Examples

        path = self.data_dir / f"{name}.jsonl"
        rows = [json.loads(line) for line in lines(path.read_text(encoding="utf-8")) if line.strip()]
        where = [f"{path} line {i + 1}" for i in range(len(rows))]
        # JSON has no tuples: pairs, word lists and label sets come back as lists; as
        # tuples they are hashable again, as they were when the run first read them.
        def restore(value):
            return tuple(value) if isinstance(value, list) else value

        return Examples([restore(r["text"]) for r in rows], [restore(r["label"]) for r in rows], str(path), where)

    def metrics(self) -> dict:
        """metrics.json: the finished run's test, validation and baseline scores."""
        return json.loads(self.metrics_file.read_text(encoding="utf-8"))

    def compression(self) -> dict | None:
        """What made this run from another (compress/lineage.py), or None for a trained run."""
        if not self.compression_file.is_file():
            return None
        return json.loads(self.compression_file.read_text(encoding="utf-8"))

    def history(self) -> list[dict]:
        if not self.history_file.is_file():
            return []
        return history_rows(self.history_file.read_text(encoding="utf-8"))


ENDING = "ending.json"


def record_ending(run: Run, exc: BaseException) -> None:
    """How a run stopped without finishing (failed or interrupted), for `status` and the dashboard.
    The error's first line only: a message names files and rows, never a training text."""
    from datetime import datetime, timezone

    from tunesmith.io import write_json
    from tunesmith.track import status_of

    if not run.path.is_dir():
        return
    message = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
    write_json(run.path / ENDING, {"status": status_of(exc), "error": message,
                                   "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def history_rows(text: str) -> list[dict]:
    """The rows of a history.jsonl's text, up to a line cut short by a crash (or still being
    written): everything before it is good. A line that is not a JSON object is no row."""
    rows = []
    for line in lines(text):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if isinstance(row, dict):
            rows.append(row)
    return rows


def status(run: Run) -> str:
    """finished, running (a process holds its training lock), failed or interrupted (also a run
    killed with -9, which could write nothing)."""
    if run.finished:
        return "finished"
    if _locked(run.path / ".lock"):
        return "running"
    ending = run.path / ENDING
    if ending.is_file():
        try:
            return json.loads(ending.read_text(encoding="utf-8")).get("status", "interrupted")
        except (OSError, json.JSONDecodeError):
            pass
    return "interrupted"


def _locked(path: Path) -> bool:
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops our probe's shared lock, if we got it


@contextmanager
def training_lock(run: Run) -> Iterator[None]:
    """Held while a process trains in the run folder: a second `train --resume` of the same
    run is refused instead of interleaving its checkpoints with the first one's."""
    with exclusive(run.path / ".lock", f"{run.path}: this run is already training (process {{holder}}); wait for "
                                       "it to finish or stop it before resuming"):
        yield


def open_finished(path: str) -> Run:
    """A run that `eval` / `predict` can use, or one clear error saying why not."""
    run = Run(Path(path))
    if not run.path.is_dir():
        raise UserError(f"{path}: no such run folder; runs are under runs/ by default")
    if not run.config_file.is_file():
        raise UserError(f"{path}: not a tunesmith run (no config.yaml)")
    if not (run.model_dir / "config.json").is_file() and not (run.path / "ensemble.json").is_file():
        raise UserError(f"{path}: the run has no saved model yet; finish it with `tunesmith train --resume {path}`")
    return run
