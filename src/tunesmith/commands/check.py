"""`tunesmith check DATA`: validate data before any compute is spent.

Exit 0 with warnings printed; exit 2 (via UserError) on errors that would stop training.
The checks are the task's own (label balance and leakage for classifiers, tag sequences
and sub-word lengths for NER), the same ones `train` runs before it starts.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field

from tunesmith import models, plan, quality
from tunesmith.commands.flags import positional, training_field
from tunesmith.config import build_config
from tunesmith.data.checks import CheckReport
from tunesmith.errors import UserError
from tunesmith.tasks import TASKS
from tunesmith.train import budget


class CheckArgs(BaseModel):
    """`tunesmith check DATA`: what to check and how."""

    data: str = Field(description="CSV/TSV/JSONL/Parquet file, CoNLL file or folder, or built-in dataset name",
                      json_schema_extra=positional())
    task: Optional[str] = Field(None, description="task the data is for (default: inferred from the data: image "
                                "folder -> image-classification, CoNLL -> token-classification, else "
                                "text-classification)")
    val_data: Optional[str] = training_field("val_data")
    test_data: Optional[str] = training_field("test_data")
    text_col: Optional[str] = training_field("text_col")
    label_col: Optional[str] = training_field("label_col")
    source_lang: Optional[str] = training_field("source_lang")
    target_lang: Optional[str] = training_field("target_lang")
    prompt_template: Optional[str] = training_field("prompt_template")
    loss: Optional[str] = training_field("loss")  # preference: the layout (pairs, or kto's answers) and its checks
    desirable_weight: Optional[float] = training_field("desirable_weight")
    undesirable_weight: Optional[float] = training_field("undesirable_weight")
    reward: Optional[str] = training_field("reward")  # rl: which answers it needs, and the user's file imports
    reward_pattern: Optional[str] = training_field("reward_pattern")
    model: Optional[str] = Field(None, description="tokenizer for the length check (default: the task's, minilm "
                                 "for text)")
    max_length: Optional[int] = Field(None, gt=1, description="truncation length to check against (default: the "
                                      "task's, 128; 512 for causal-lm)")
    encoding: str = training_field("encoding")
    seed: int = training_field("seed")
    as_json: bool = Field(False, description="print the report as JSON", json_schema_extra={"flags": ["--json"]})
    quality_checks: bool = Field(
        True, description="likely label errors, near-duplicates across splits, outliers and other-script rows, from "
        "the model's frozen features (seconds per 10,000 rows; --no-quality: exact checks only)",
        json_schema_extra={"flags": ["--quality-checks", "--quality"]})
    deep: bool = Field(False, description="judge the labels with fine-tuned models instead of the frozen-feature "
                       "probe: 3 runs as `train` would make them, each scoring the third of the rows it did not see "
                       "(minutes, not seconds: the time is estimated before they start; better where the probe is weak)")
    method: Optional[str] = Field(None, description="--deep: the method its runs fine-tune with (default: the task's, "
                                  "as train would choose)")
    epochs: Optional[float] = Field(None, gt=0, description="--deep: passes over the data in each run (default: as "
                                    "train would choose)")
    lr: Optional[float] = Field(None, gt=0, description="--deep: the learning rate of its runs (default: the method's)")
    near_threshold: float = training_field("near_threshold")
    lists: Optional[str] = Field(None, description="folder for the full lists (suspect_labels.csv, "
                                 "near_duplicates.csv, outliers.csv) (default: runs/check-<data name>)",
                                 json_schema_extra={"metavar": "DIR"})


def check(args: CheckArgs, out=print) -> CheckReport:
    """The task's checks; with `quality_checks`, also the data-quality section (quality/),
    whose full lists are written to `lists` (default runs/check-<data name>)."""
    reading = ("task", "data", "val_data", "test_data", "text_col", "label_col", "source_lang", "target_lang",
               "prompt_template", "loss", "desirable_weight", "undesirable_weight", "reward", "reward_pattern", "model", "max_length", "encoding",
               "seed", "method", "epochs", "lr")
    cfg = build_config({key: getattr(args, key) for key in reading if getattr(args, key) is not None}, "flags")
    splits = TASKS[cfg.task].load_data(cfg)
    early = []  # notes from before the report exists: printed with it (--json: inside it, so stdout stays JSON)
    source, tokenizer = None, None
    try:
        run_plan = plan.resolve(cfg, splits)  # what train would read the data with
        cfg, source = run_plan.settings, run_plan.source
        early.extend(note for key, note in run_plan.notes.items() if key in ("model", "max_length"))
        early.append(run_plan.summary())  # what `train` would use on this data
        tokenizer = TASKS[cfg.task].load_processor(source, cfg)
        models.hold_to_limit(tokenizer, run_plan.position_limit)
    except UserError as exc:
        if cfg.max_length is not None:  # a --max-length the model cannot read: the user's to fix
            raise
        early.append(f"token lengths not checked ({exc})")
    report = TASKS[cfg.task].check(splits, tokenizer, cfg.resolved_max_length())
    report.facts["notes"] = early + report.facts.get("notes", [])
    if source is not None:
        for line in budget.plan(cfg, TASKS[cfg.task], source, report.facts.get("token_lengths"), len(splits.train)):
            report.facts.setdefault("notes", []).append(line)
    if args.deep and not (args.quality_checks and "label-errors" in TASKS[cfg.task].quality_checks):
        raise UserError(f"--deep: {cfg.task} has no label check to deepen" if args.quality_checks else
                        "--deep judges labels, one of the quality checks: drop --no-quality")
    if args.quality_checks and TASKS[cfg.task].quality_checks:
        judge = _deep_judge(cfg, splits, source, report, print if not args.as_json else _to_stderr) if args.deep else None
        found = quality.inspect(TASKS[cfg.task], splits, source, tokenizer, cfg.resolved_max_length(),
                                args.near_threshold, args.seed, show_text=not args.as_json, judge=judge)
        found.write(Path(args.lists) if args.lists else Path("runs") / f"check-{_name(args.data)}")
        report.facts["quality"] = found.facts
        report.warnings.extend(found.warnings)
        report.sections.append(found.text() + "".join(f"\n  full list: {path}" for path in found.facts["files"].values()))
    if args.as_json:
        out(json.dumps({"facts": report.facts, "warnings": report.warnings}, indent=2))
    else:
        columns = f"text column '{splits.text_col}', label column '{splits.label_col}'" if splits.label_col else \
            f"read as {splits.text_col}s"
        out(f"checked {args.data}: {columns}")
        out(report.to_text())
    return report


def _deep_judge(cfg, splits, source, report: CheckReport, say):
    """`check --deep`'s judge for the label check (deep_labels.py), its cost said first."""
    from tunesmith.commands import deep_labels

    if source is None:
        raise UserError(f"--deep: the model {cfg.model} could not be read, so nothing can be fine-tuned to judge the labels")
    line = deep_labels.time_line(cfg, TASKS[cfg.task], source, report.facts.get("token_lengths"), len(splits.train))
    say(line or f"check --deep: {deep_labels.FOLDS} fine-tuned runs on the training split; this takes a while")

    def judge(class_ids):
        probs, judged = deep_labels.out_of_fold_probs(cfg, splits, class_ids, log=say)
        return probs, judged, f"a model fine-tuned ({cfg.method}) on the other {deep_labels.FOLDS - 1} folds"

    return judge


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _name(data: str) -> str:
    """A folder name for the data: its file name without extension, or the dataset's name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(data).stem or "data").strip("-") or "data"
