"""Texts arriving over time: CSV/TSV or JSONL files (or a folder of them) that may still be
growing, or standard input.

Each item has an id (its `id` column, else the file's name and line number; on standard input
a hash of the line), a time (its `time`, `timestamp`, `date`, `created_at` or `datetime`
column: ISO 8601, or Unix seconds; else the time it was read), its text, and the row's other
fields (a topic column, say). Files are read from the byte offset the store kept, up to the
last complete line: a line still being written is read whole on the next pass. One record
per line (CSV fields with line breaks inside are not supported here).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tunesmith.errors import UserError

ID_COLUMNS = ("id", "item_id", "message_id")
TIME_COLUMNS = ("time", "timestamp", "date", "created_at", "datetime")
TEXT_COLUMNS = ("text", "content", "sentence", "message", "tweet", "review", "title")
SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
READ_BLOCK = 1 << 20  # bytes read at a time from a growing file


class BadLine(UserError):
    """One line that cannot be read (not JSON, a time that is not a time): skipped and reported,
    so one bad line does not stop a monitor (a missing text field, which every line would share,
    does)."""


@dataclass
class Item:
    id: str
    time: float  # Unix seconds, UTC
    text: str
    fields: dict = field(default_factory=dict)


@dataclass
class Position:
    """Where reading a file stopped: bytes consumed and lines consumed (for ids)."""

    offset: int = 0
    line: int = 0


def parse_time(value, where: str) -> float:
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise BadLine(f"{where}: time {text!r} is not a number of seconds")
        return seconds
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadLine(f"{where}: time {text!r} is neither ISO 8601 (2026-12-01T09:30:00) nor Unix seconds") from None
    if moment.tzinfo is None:  # a time without a zone is read as UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _column(names, candidates: tuple[str, ...]) -> str | None:
    lowered = {str(n).lower(): n for n in names}
    return next((lowered[c] for c in candidates if c in lowered), None)


def _item(row: dict, default_id: str, where: str, text_col: str | None) -> Item:
    text_key = text_col or _column(row, TEXT_COLUMNS)
    if text_key is None or text_key not in row:
        raise UserError(f"{where}: no text field (looked for {', '.join(TEXT_COLUMNS)}); pass --text-col NAME")
    id_key, time_key = _column(row, ID_COLUMNS), _column(row, TIME_COLUMNS)
    moment = parse_time(row[time_key], where) if time_key and str(row[time_key]).strip() else time.time()
    fields = {k: v for k, v in row.items() if k not in (text_key, id_key, time_key)}
    return Item(str(row[id_key]) if id_key else default_id, moment, str(row[text_key] or ""), fields)


def read_file(path: Path, at: Position, text_col: str | None = None, skipped: list[str] | None = None,
              limit: int = 1000, growing: bool = True) -> tuple[list[Item], Position]:
    """Up to `limit` complete lines of `path` after `at`, as items, and the position after
    them. Lines that cannot be read are left out and described in `skipped`. In a file that is
    not `growing` (a replay), a last line without a line break is complete too."""
    skipped = [] if skipped is None else skipped
    with open(path, "rb") as f:
        header_line = f.readline() if path.suffix.lower() in (".csv", ".tsv") else b""
        start = max(at.offset, len(header_line))
        f.seek(start)
        chunk = b""
        while chunk.count(b"\n") < limit:  # read blocks until `limit` lines (or the end) are in hand
            block = f.read(READ_BLOCK)
            if not block:
                if not growing and chunk and not chunk.endswith(b"\n"):
                    chunk += b"\n"
                break
            chunk += block
    whole = chunk.split(b"\n")[:-1][:limit]  # complete lines only: the rest is still being written
    if not whole:
        return [], at
    # lines consumed before this chunk (after a rotation the count goes on, so ids stay unique)
    first = at.line if at.offset or at.line else (1 if header_line else 0)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    header = next(csv.reader([header_line.decode("utf-8-sig", errors="replace")], delimiter=delimiter)) if header_line else None
    items: list[Item] = []
    for k, raw in enumerate(whole):
        line, number = raw.decode("utf-8", errors="replace").rstrip("\r"), first + k + 1
        where, default_id = f"{path} line {number}", f"{path.name}:{number}"
        if not line.strip():
            continue
        if header is not None:
            _keep(items, skipped, lambda: _item(dict(zip(header, next(csv.reader([line], delimiter=delimiter)))),
                                                default_id, where, text_col))
        else:
            _keep(items, skipped, lambda: _item(_json_row(line, where), default_id, where, text_col))
    return items, Position(start + sum(len(raw) + 1 for raw in whole), first + len(whole))


def _keep(items: list[Item], skipped: list[str], make) -> None:
    try:
        items.append(make())
    except BadLine as exc:
        skipped.append(str(exc))


def _json_row(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(f"{where}: not a JSON object ({exc.msg}); one JSON object per line") from None
    if not isinstance(row, dict):
        raise BadLine(f"{where}: not a JSON object; one JSON object per line")
    return row


def files_of(source: Path) -> list[Path]:
    """The files a source names: itself, or a folder's CSV/TSV/JSONL files in name order."""
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if source.is_file():
        if source.suffix.lower() not in SUFFIXES:
            raise UserError(f"{source}: give a CSV, TSV or JSONL file (or a folder of them), or - for standard input")
        return [source]
    raise UserError(f"--source {source}: not found")


class StdinLines:
    """Standard input, a line at a time: JSONL, or CSV whose first line is the header. Ids are
    the `id` field or a hash of the line (standard input cannot be re-read, so exactly-once
    rests on the ids: give an `id` field if identical lines are separate items)."""

    def __init__(self, stream=None, text_col: str | None = None):
        self.stream = stream or sys.stdin
        self.text_col = text_col
        self.header: list[str] | None = None
        self.jsonl: bool | None = None
        self.ended = False
        self.number = 0

    def read(self, limit: int, skipped: list[str] | None = None) -> list[Item]:
        items, skipped = [], ([] if skipped is None else skipped)
        while len(items) < limit:
            line = self.stream.readline()
            if not line:
                self.ended = True
                break
            self.number += 1
            if not line.strip():
                continue
            where = f"standard input line {self.number}"
            if self.jsonl is None:  # the first line says which: a JSON object, or a CSV header
                self.jsonl = line.lstrip().startswith("{")
                if not self.jsonl:
                    self.header = next(csv.reader([line]))
                    continue
            digest = hashlib.sha1(line.encode("utf-8")).hexdigest()[:16]
            header = self.header
            _keep(items, skipped, lambda: _item(dict(zip(header, next(csv.reader([line])))) if header
                                                else _json_row(line, where), f"stdin:{digest}", where, self.text_col))
        return items
