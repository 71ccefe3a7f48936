"""What the quality checks found (`QualityReport`): the counts `check --json` and metrics.json
keep, the lines `check` prints, the full lists written as CSV, and the run report's section."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.io import atomic_path
from tunesmith.quality.labels import Suspect

EVAL_SPLITS = ("val", "test")


@dataclass
class QualityReport:
    facts: dict = field(default_factory=dict)  # counts, per kind; for --json and metrics.json
    warnings: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the section `check` prints
    suspects: list[Suspect] = field(default_factory=list)  # training rows
    near: dict[str, list[tuple[int, int, float]]] = field(default_factory=dict)  # split -> (row, train row, similarity)
    tables: dict[str, list[dict]] = field(default_factory=dict)  # file name -> rows to write

    def write(self, folder: Path) -> dict[str, str]:
        """The full lists as CSV files in `folder` (each written atomically); {name: path}."""
        written = {}
        for name, rows in self.tables.items():
            if not rows:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            written[name] = str(path)
        self.facts["files"] = written
        return written

    def text(self) -> str:
        return "\n".join(["data quality:"] + [f"  {line}" for line in self.lines])
