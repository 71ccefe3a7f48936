"""Runs combined into one (`soup`, `ensemble`): they must share the task, base model, labels
and held-out test split, so the combination is scored on rows none of them trained on."""

from __future__ import annotations

import shutil
from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.io import write_yaml
from tunesmith.runs import Run, open_finished


def compatible_runs(paths: list[str], verb: str) -> list[Run]:
    if len(paths) < 2:
        raise UserError(f"{verb}: give at least two runs")
    runs = [open_finished(p) for p in paths]
    first = runs[0]
    cfg = first.settings()
    for run in runs[1:]:
        other = run.settings()
        if other.task != cfg.task:
            raise UserError(f"{verb}: {run.path} is a {other.task} run, {first.path} a {cfg.task} run")
        if verb == "soup" and other.model != cfg.model:
            raise UserError(f"soup: {run.path} has model {other.model!r}, {first.path} {cfg.model!r}; "
                            "a soup needs the same base model")
        if run.labels() != first.labels():
            raise UserError(f"{verb}: {run.path} has other labels than {first.path}")
        if (run.data_dir / "test.jsonl").read_bytes() != (first.data_dir / "test.jsonl").read_bytes():
            raise UserError(f"{verb}: {run.path} was tested on another split than {first.path}; train the members "
                            "on the same data with the same --seed (vary --lr, --epochs, --method, ...) so the "
                            f"{verb} is scored on held-out rows")
    return runs


def start_combined_run(first: Run, name: str, output: str) -> tuple[Run, Path]:
    """The new run (refused if the name is taken) and a temporary folder holding what every
    combined run shares with its members: the splits, the labels and the config. The caller
    adds its model, then moves the folder into place with `replace_dir`."""
    target = Run(Path(output) / name)
    if target.path.exists():
        raise UserError(f"{target.path}: already exists; choose another --name")
    tmp = target.path.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(first.data_dir, tmp / "data")
    shutil.copy2(first.labels_file, tmp / "labels.json")
    write_yaml(tmp / "config.yaml", {**first.config(), "name": name})
    return target, tmp
