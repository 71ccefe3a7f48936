"""`tunesmith check DATA`: validate data before any compute is spent.

Exit 0 with warnings printed; exit 2 (via UserError) on errors that would stop training.
"""

from __future__ import annotations

import json

from tunesmith import models
from tunesmith.data.checks import CheckReport, check_splits
from tunesmith.data.splits import load_splits
from tunesmith.errors import UserError


def check(data: str, val_data=None, test_data=None, text_col=None, label_col=None, model="minilm",
          max_length=128, encoding="utf-8", seed=42, as_json=False, out=print) -> CheckReport:
    splits = load_splits(data, val_data, test_data, text_col, label_col, encoding, seed=seed)
    try:
        tokenizer = models.load_tokenizer(model)
    except UserError as exc:
        tokenizer = None
        out(f"note: token lengths not checked ({exc})")
    report = check_splits(splits, tokenizer, max_length)
    if as_json:
        out(json.dumps({"facts": report.facts, "warnings": report.warnings}, indent=2))
    else:
        out(f"checked {data}: text column '{splits.text_col}', label column '{splits.label_col}'")
        out(report.to_text())
    return report
