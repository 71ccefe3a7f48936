"""From a raw table to validated (text, label) examples.

Columns are taken from the flags or detected from common names; every label must be
present; the error for a bad row names the file and the row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.data.sources import Table
from tunesmith.errors import UserError
from tunesmith.io import write_text

# Checked in order; the first column present wins.
TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "utterance", "query", "question", "tweet", "body", "text_a")
# Text pairs (paraphrase, NLI, query-item): the first and second text of each pair.
PAIR_FIRST_COLUMNS = ("text_a", "sentence1", "question1", "premise", "query", "question", "profile", "user", "text", "sentence")
PAIR_SECOND_COLUMNS = ("text_b", "sentence2", "question2", "hypothesis", "answer", "passage", "candidate", "item", "text_pair")
LABEL_COLUMNS = ("label", "labels", "category", "class", "sentiment", "intent", "target", "topic", "y")


@dataclass
class Examples:
    texts: list[str]
    labels: list[str]
    source: str
    where: list[str] = field(default_factory=list)  # locator of each example in its source

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "Examples":
        return Examples(
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            self.source,
            [self.where[i] for i in indices] if self.where else [],
        )


def write_split(path: Path, examples: Examples) -> None:
    """One JSON object per line, {"text": ..., "label": ...}, written atomically. Inputs and
    targets are whatever the task uses (a text, a list of words, a number...): JSON keeps them
    exactly, `Run.split` reads them back, and plain rows load again as `--data`."""
    lines = (json.dumps({"text": t, "label": l}, ensure_ascii=False) for t, l in zip(examples.texts, examples.labels))
    write_text(path, "".join(line + "\n" for line in lines))


def pick_column(table: Table, given: str | None, candidates: tuple[str, ...], role: str, flag: str) -> str:
    columns = list(table.frame.columns)
    if given is not None:
        if given not in columns:
            raise UserError(f"{table.source}: no column '{given}' ({flag}); columns are: {', '.join(map(str, columns))}")
        return given
    lowered = {str(c).lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    raise UserError(
        f"{table.source}: cannot tell which column holds the {role}; columns are: "
        f"{', '.join(map(str, columns))}; pass {flag} NAME"
    )


def to_examples(table: Table, text_col: str, label_col: str | None, target=None, pair_col: str | None = None) -> Examples:
    """Validated examples: a text (or a (text, text) pair) and its parsed target.

    Without `label_col` (prediction input) labels are empty strings; `target` parses the
    label cells (one class by default; see data/targets.py).
    """
    from tunesmith.data.targets import ClassTarget

    target = target or ClassTarget()
    frame = table.frame
    texts = frame[text_col].tolist()
    if pair_col is not None:
        texts = list(zip(texts, frame[pair_col].tolist()))
    if label_col is None:
        labels = [""] * len(texts)
    else:
        labels = [target.parse(str(v), table.where(i), label_col) for i, v in enumerate(frame[label_col].tolist())]
    where = [table.where(i) for i in range(len(texts))]
    return Examples(texts, labels, table.source, where)
