"""What a label cell holds, per task family: one class, a number, or a set of labels.

A target kind parses the raw cell (naming the row when it cannot), groups values for
stratified splitting, and derives the label names a model head is built for. Text
classification, pair classification, regression and multi-label classification share all
of `load_splits` and differ only here.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from tunesmith.errors import UserError


class ClassTarget:
    """One label per example ("positive", "billing", "1")."""

    def parse(self, cell: str, where: str, column: str) -> str:
        value = cell.strip()
        if value == "" or value.lower() == "nan":
            raise UserError(f"{where}: label is empty in column '{column}'; fill it in or remove the row")
        return value

    def strata(self, values: list) -> list:
        return values

    def names(self, train: list, source: str, column: str) -> list[str]:
        names = sorted(set(train))
        if len(names) < 2:
            only = f" ('{names[0]}')" if names else ""
            raise UserError(f"{source}: column '{column}' has a single class{only}; a classifier needs at least two")
        return names

    def unseen(self, values: list, names: list[str]) -> list[str]:
        return sorted(set(values) - set(names))

    def with_separator(self, separator: str) -> "ClassTarget":
        return self  # one label per cell: nothing to separate


class NumberTarget:
    """A numeric score (a rating, a click-through rate): regression."""

    BINS = 5  # stratify splits by score quintile, so val and test span the same range as train

    def parse(self, cell: str, where: str, column: str) -> float:
        try:
            value = float(cell)
        except ValueError:
            raise UserError(f"{where}: '{cell[:30]}' in column '{column}' is not a number; regression needs numeric "
                            "targets (for classes use --task text-classification)") from None
        if not np.isfinite(value):
            raise UserError(f"{where}: '{cell}' in column '{column}' is not a finite number")
        return value

    def strata(self, values: list) -> list:
        if len(set(values)) <= self.BINS:
            return [str(v) for v in values]
        edges = np.quantile(values, np.linspace(0, 1, self.BINS + 1)[1:-1])
        return [str(int(np.searchsorted(edges, v, side="right"))) for v in values]

    def names(self, train: list, source: str, column: str) -> list[str]:
        if len(set(train)) < 2:
            raise UserError(f"{source}: column '{column}' has a single value; nothing to learn")
        return [column]  # one output: the score

    def unseen(self, values: list, names: list[str]) -> list[str]:
        return []

    def with_separator(self, separator: str) -> "NumberTarget":
        return self  # a number per cell



class LabelSetTarget:
    """Zero or more labels per example: a JSON list (["a", "b"]) or a separated string ("a|b")."""

    def __init__(self, separator: str = "|"):
        self.separator = separator

    def with_separator(self, separator: str) -> "LabelSetTarget":
        return LabelSetTarget(separator)

    def parse(self, cell: str, where: str, column: str) -> tuple[str, ...]:
        text = cell.strip()
        if text.startswith("["):
            try:
                values = json.loads(text)
            except json.JSONDecodeError:
                raise UserError(f"{where}: column '{column}' starts like a JSON list but is not one ({text[:30]})") from None
        else:
            values = text.split(self.separator) if text else []
        labels = tuple(sorted({str(v).strip() for v in values if str(v).strip()}))
        return labels

    def strata(self, values: list) -> list:
        # Stratify on each example's rarest label: rare labels reach every split.
        counts = Counter(label for labels in values for label in labels)
        return [min(labels, key=lambda l: (counts[l], l)) if labels else "" for labels in values]

    def names(self, train: list, source: str, column: str) -> list[str]:
        names = sorted({label for labels in train for label in labels})
        if len(names) < 2:
            raise UserError(f"{source}: column '{column}' holds fewer than two distinct labels; multi-label "
                            f"classification needs at least two (separator: {self.separator!r}, or JSON lists)")
        return names

    def unseen(self, values: list, names: list[str]) -> list[str]:
        return sorted({label for labels in values for label in labels} - set(names))
