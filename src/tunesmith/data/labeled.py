"""From a raw table to validated (text, label) examples.

Columns are taken from the flags or detected from common names; every label must be
present; the error for a bad row names the file and the row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.data.sources import Table
from tunesmith.errors import UserError

# Checked in order; the first column present wins.
TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "utterance", "query", "question", "tweet", "body", "text_a")
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


def to_examples(table: Table, text_col: str, label_col: str | None) -> Examples:
    """Validated examples. Without `label_col` (prediction input) labels are empty strings."""
    frame = table.frame
    texts = frame[text_col].tolist()
    if label_col is None:
        labels = [""] * len(texts)
    else:
        labels = [str(v).strip() for v in frame[label_col].tolist()]
        for index, label in enumerate(labels):
            if label == "" or label.lower() == "nan":
                raise UserError(
                    f"{table.where(index)}: label is empty in column '{label_col}'; fill it in or remove the row"
                )
    where = [table.where(i) for i in range(len(texts))]
    return Examples(texts, labels, table.source, where)
