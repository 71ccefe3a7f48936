"""`check --deep`: label errors judged by fine-tuned models that never saw the row.

The frozen-feature probe `check` runs by default is only as good as the frozen features: on
sentence sentiment they separate the classes poorly, and its disagreements are mostly hard
rows, not wrong labels (docs/benchmarks.md, "Label errors"). Here each of k folds of the
training split is scored by a model fine-tuned, as `train` would, on the other k-1 folds, and
confident learning reads those out-of-fold probabilities. It costs k training runs, so the
time estimate is printed before the first one starts.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np

from tunesmith.config import build_config
from tunesmith.data.labeled import write_split
from tunesmith.inference import Predictor
from tunesmith.quality.labels import fold_rows
from tunesmith.train import budget

FOLDS = 3  # each row's judge trains on two thirds of the data: less, and the judges are weaker


def out_of_fold_probs(cfg, splits, class_ids: np.ndarray, log=print) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities rows x classes, judged mask) for the training split, each row scored by
    a run fine-tuned on the folds that do not hold it. Unjudged rows (a class with one row)
    get NaN."""
    from tunesmith.commands.train import train

    probs = np.full((len(class_ids), len(splits.labels)), np.nan)
    judged, folds = fold_rows(class_ids, len(splits.labels), FOLDS, cfg.seed)
    with tempfile.TemporaryDirectory(prefix="tunesmith-deep-") as scratch:
        for number, (fit_rows, held_rows) in enumerate(folds, 1):
            log(f"check --deep: fold {number} of {len(folds)}: fine-tuning on {len(fit_rows):,} rows, scoring {len(held_rows):,}")
            with contextlib.redirect_stdout(sys.stderr):  # the runs' progress lines: stdout may be --json's
                run = train(_fold_config(cfg, splits, fit_rows, held_rows, Path(scratch), number), log=lambda _: None)
            probs[held_rows] = _scored(run, splits, held_rows)
    return probs, judged


def time_line(cfg, task, source: str, token_lengths: dict | None, rows: int) -> str | None:
    """What the deep check will cost, from the same estimate `train` prints."""
    from tunesmith.search.ladder import OVERHEAD_S

    epoch = budget.epoch_seconds(cfg, task, source, token_lengths, rows * (FOLDS - 1) // FOLDS)
    if epoch is None:
        return None
    # Each run also loads the model, validates and scores its held-out third: auto's measured
    # overhead per run. (2,000 SST-2 rows: estimated 102 s, took 125 s.)
    total = (epoch * cfg.epochs + OVERHEAD_S) * FOLDS
    return (f"check --deep: {FOLDS} fine-tuned runs of {cfg.epochs:g} epochs on {(FOLDS - 1)}/{FOLDS} of "
            f"{rows:,} rows: about {budget.duration(total)} on this machine")


def _fold_config(cfg, splits, fit_rows, held_rows, scratch: Path, number: int):
    """The settings of one fold's run: the plan's (model, method, length, epochs) on the fold's
    rows, with the held-out rows as its test split and nothing the judge does not need."""
    folder = scratch / f"fold-{number}"
    write_split(folder / "train.jsonl", splits.train.subset(list(fit_rows)))
    write_split(folder / "held.jsonl", splits.train.subset(list(held_rows)))
    keep = ("task", "model", "method", "max_length", "epochs", "lr", "batch_size", "seed", "pooling")
    values = {key: getattr(cfg, key) for key in keep}
    return build_config({**values, "data": str(folder / "train.jsonl"), "test_data": str(folder / "held.jsonl"),
                         "text_col": "text", "label_col": "label", "output": str(scratch), "name": f"run-{number}",
                         "quality_checks": False, "baseline": False}, "check --deep")


def _scored(run, splits, held_rows) -> np.ndarray:
    """The fold's run's probabilities for its held-out rows, in the data's class order."""
    predictor = Predictor.from_run(run)
    fold_probs = np.asarray(predictor.predict([splits.train.texts[i] for i in held_rows]))
    out = np.zeros((len(held_rows), len(splits.labels)))
    position = {label: i for i, label in enumerate(splits.labels)}
    for column, label in enumerate(predictor.labels):
        out[:, position[label]] = fold_probs[:, column]
    return out
