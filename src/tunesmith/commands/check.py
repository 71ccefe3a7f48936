"""`tunesmith check DATA`: validate data before any compute is spent.

Exit 0 with warnings printed; exit 2 (via UserError) on errors that would stop training.
The checks are the task's own (label balance and leakage for classifiers, tag sequences
and sub-word lengths for NER), the same ones `train` runs before it starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tunesmith import models, quality
from tunesmith.config import build_config
from tunesmith.data.checks import CheckReport
from tunesmith.errors import UserError
from tunesmith.tasks import TASKS
from tunesmith.train import budget


def check(data: str, val_data=None, test_data=None, text_col=None, label_col=None, model=None,
          max_length=None, encoding="utf-8", seed=42, as_json=False, task=None, quality_checks: bool = True,
          near_threshold: float = quality.NEAR_THRESHOLD, lists: str | None = None, out=print) -> CheckReport:
    """The task's checks; with `quality_checks`, also the data-quality section (quality/),
    whose full lists are written to `lists` (default runs/check-<data name>)."""
    if not 0 < near_threshold <= 1:
        raise UserError(f"--near-threshold {near_threshold}: give a cosine similarity in (0, 1], e.g. 0.95")
    values = dict(task=task, data=data, val_data=val_data, test_data=test_data, text_col=text_col,
                  label_col=label_col, model=model, max_length=max_length, encoding=encoding, seed=seed)
    cfg = build_config({k: v for k, v in values.items() if v is not None}, "flags")
    splits = TASKS[cfg.task].load_data(cfg)
    early = []  # notes from before the report exists: printed with it (--json: inside it, so stdout stays JSON)
    chosen = models.choose_for_data(cfg, TASKS[cfg.task], splits.train.texts)  # what train would read it with
    if chosen:
        early.append(chosen)
    try:
        source = models.resolve(cfg.resolved_model())
        tokenizer = TASKS[cfg.task].load_processor(source, cfg)
    except UserError as exc:
        source, tokenizer = None, None
        early.append(f"token lengths not checked ({exc})")
    if tokenizer is not None:
        early.extend(models.fit_max_length(cfg, source, tokenizer))
    report = TASKS[cfg.task].check(splits, tokenizer, cfg.resolved_max_length())
    report.facts["notes"] = early + report.facts.get("notes", [])
    if source is not None:
        for line in budget.plan(cfg, TASKS[cfg.task], source, report.facts.get("token_lengths"), len(splits.train)):
            report.facts.setdefault("notes", []).append(line)
    if quality_checks and TASKS[cfg.task].quality_checks:
        found = quality.inspect(TASKS[cfg.task], splits, source, tokenizer, cfg.resolved_max_length(), near_threshold,
                                seed, show_text=not as_json)
        found.write(Path(lists) if lists else Path("runs") / f"check-{_name(data)}")
        report.facts["quality"] = found.facts
        report.warnings.extend(found.warnings)
        report.sections.append(found.text() + "".join(f"\n  full list: {path}" for path in found.facts["files"].values()))
    if as_json:
        out(json.dumps({"facts": report.facts, "warnings": report.warnings}, indent=2))
    else:
        columns = f"text column '{splits.text_col}', label column '{splits.label_col}'" if splits.label_col else \
            f"read as {splits.text_col}s"
        out(f"checked {data}: {columns}")
        out(report.to_text())
    return report


def _name(data: str) -> str:
    """A folder name for the data: its file name without extension, or the dataset's name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(data).stem or "data").strip("-") or "data"
