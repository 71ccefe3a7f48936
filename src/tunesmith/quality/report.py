"""What the quality checks found (`QualityReport`): the counts `check --json` and metrics.json
keep, the lines `check` prints, the full lists written as CSV, and the run report's section."""

from __future__ import annotations

import csv
import html
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


def report_section(facts: dict | None) -> str:
    """The run report's HTML section on data quality (from metrics.json's data_quality)."""
    if not facts:
        return ""
    rows = []
    suspects = facts.get("suspect_labels")
    if suspects:
        rows.append(("training labels that look wrong", f"{suspects['count']} of {suspects['of']}"
                     + (f" (dropped: {facts.get('dropped_suspect_labels', 0)})" if facts.get("dropped_suspect_labels") else "")))
    near = facts.get("near_duplicates")
    if near:
        removed = facts.get("removed_near_duplicates") or {}
        for name in EVAL_SPLITS:
            if name in near:
                rows.append((f"{name} texts nearly repeating a training text (cosine >= {near['threshold']:g})",
                             f"{near[name]}" + (f" (left out: {removed[name]})" if removed.get(name) else "")))
    overlaps = facts.get("overlaps") or {}
    for name in EVAL_SPLITS:
        if overlaps.get(name):
            rows.append((f"{name} texts repeating part of a training text word for word", str(overlaps[name])))
    for name, count in (facts.get("near_duplicate_images") or {}).items():
        rows.append((f"{name} images nearly repeating a training image", str(count)))
    for name, count in (facts.get("outliers") or {}).items():
        if name != "cutoff":
            rows.append((f"{name} texts far from every class", str(count)))
    if facts.get("empty_after_normalisation"):
        rows.append(("texts empty after normalisation", str(facts["empty_after_normalisation"])))
    if facts.get("other_script"):
        rows.append((f"texts not in the main script ({facts.get('main_script')})", str(facts["other_script"])))
    files = ", ".join(Path(p).name for p in (facts.get("files") or {}).values())
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return ("<h2>Data quality (before training)</h2><table><tr><th>finding</th><th>rows</th></tr>" + body + "</table>"
            + (f"<p>Full lists in the run folder's quality/: {html.escape(files)}.</p>" if files else ""))
