"""The monitor's state in SQLite: scored items, each source's read position, and alerts.

One transaction per batch holds the batch's items, the read positions after it and the alerts
it triggered, so a monitor killed at any moment restarts from a consistent state: items
already counted are skipped by id (the primary key), positions point after the last committed
line, and alerts not yet delivered are still marked so. Aggregates per topic and window are
computed from the items (an index on topic and time), so they cannot drift from them.

Retention: items older than the store's horizon (the newest item's time minus `--retain`, in
event time so a replay keeps what the live stream kept) are deleted in the same transaction,
texts and all; alerts stay (each keeps the few texts that drove it as evidence).

The queries use no SQLite-only functions, but the store is SQLite's alone today: the alerts
table's `AUTOINCREMENT`, `BEGIN IMMEDIATE` and the WAL pragma are SQLite syntax, and
`CAST(x AS INTEGER)` (window starts in `series`) truncates here where PostgreSQL rounds. A
PostgreSQL store needs those changed, a driver, and a test against a real server.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tunesmith.monitor.stream import Position

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT NOT NULL, topic TEXT NOT NULL, time REAL NOT NULL, label TEXT NOT NULL,
    negative INTEGER NOT NULL, score REAL NOT NULL, text TEXT NOT NULL, PRIMARY KEY (id, topic));
CREATE INDEX IF NOT EXISTS items_topic_time ON items (topic, time);
CREATE INDEX IF NOT EXISTS items_time ON items (time);
CREATE TABLE IF NOT EXISTS positions (source TEXT PRIMARY KEY, byte_offset INTEGER NOT NULL, line INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, topic TEXT NOT NULL, window_start REAL NOT NULL,
    window_end REAL NOT NULL, why TEXT NOT NULL, facts TEXT NOT NULL, evidence TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0, UNIQUE (rule, topic, window_start));
"""


@dataclass
class Scored:
    id: str
    time: float
    text: str
    label: str
    negative: bool
    score: float  # P(positive) - P(negative), in [-1, 1]
    topics: list[str]


@dataclass
class WindowStats:
    count: int
    negatives: int
    mean_score: float

    @property
    def share(self) -> float:
        return self.negatives / self.count if self.count else 0.0


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Transactions are explicit; the service calls from worker threads, one at a time (Pipeline.lock).
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    @contextmanager
    def transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---- read positions ------------------------------------------------------------------
    def position(self, source: str) -> Position:
        row = self.db.execute("SELECT byte_offset, line FROM positions WHERE source = ?", (source,)).fetchone()
        return Position(*row) if row else Position()

    def set_position(self, source: str, at: Position) -> None:
        self.db.execute("INSERT INTO positions (source, byte_offset, line) VALUES (?, ?, ?) "
                        "ON CONFLICT (source) DO UPDATE SET byte_offset = excluded.byte_offset, line = excluded.line",
                        (source, at.offset, at.line))

    # ---- items ---------------------------------------------------------------------------
    def known(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            found |= {r[0] for r in self.db.execute(f"SELECT DISTINCT id FROM items WHERE id IN ({marks})", part)}
        return found

    def add(self, items: list[Scored]) -> set[tuple[str, float]]:
        """Insert scored items (one row per topic); returns the (topic, time) pairs touched."""
        rows = [(i.id, topic, i.time, i.label, int(i.negative), i.score, i.text) for i in items for topic in i.topics]
        self.db.executemany("INSERT INTO items (id, topic, time, label, negative, score, text) VALUES "
                            "(?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
        return {(topic, time) for _, topic, time, *_ in rows}

    def window(self, topic: str, start: float, end: float) -> WindowStats:
        count, negatives, mean = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(negative), 0), COALESCE(AVG(score), 0) FROM items "
            "WHERE topic = ? AND time >= ? AND time < ?", (topic, start, end)).fetchone()
        return WindowStats(count, negatives, mean)

    def newest_time(self) -> float | None:
        return self.db.execute("SELECT MAX(time) FROM items").fetchone()[0]

    def expire(self, before: float) -> int:
        """Delete the items older than `before`; returns how many rows went."""
        return self.db.execute("DELETE FROM items WHERE time < ?", (before,)).rowcount

    def latest_window(self, topic: str, size: float) -> tuple[float, WindowStats]:
        """The start and stats of `topic`'s newest window that has items (two indexed lookups,
        however long the topic's history)."""
        newest = self.db.execute("SELECT MAX(time) FROM items WHERE topic = ?", (topic,)).fetchone()[0]
        start = (newest // size) * size
        return start, self.window(topic, start, start + size)

    def first_time(self, topic: str) -> float | None:
        return self.db.execute("SELECT MIN(time) FROM items WHERE topic = ?", (topic,)).fetchone()[0]

    def series(self, topic: str, size: float) -> list[tuple[float, WindowStats]]:
        """Every window of `topic` that has items: (window start, stats), in time order."""
        rows = self.db.execute(
            "SELECT CAST(time / ? AS INTEGER) AS w, COUNT(*), SUM(negative), AVG(score) FROM items WHERE topic = ? "
            "GROUP BY w ORDER BY w", (size, topic)).fetchall()
        return [(w * size, WindowStats(c, n, m)) for w, c, n, m in rows]

    def topics(self) -> list[tuple[str, int]]:
        return self.db.execute("SELECT topic, COUNT(*) AS c FROM items GROUP BY topic ORDER BY c DESC").fetchall()

    def most_negative(self, topic: str, start: float, end: float, limit: int = 5) -> list[dict]:
        rows = self.db.execute("SELECT id, time, score, text FROM items WHERE topic = ? AND time >= ? AND time < ? "
                               "AND negative = 1 ORDER BY score ASC, id LIMIT ?", (topic, start, end, limit))
        return [{"id": i, "time": t, "score": round(s, 4), "text": x} for i, t, s, x in rows]

    # ---- alerts ----------------------------------------------------------------------------
    def alerted(self, rule: str, topic: str, window_start: float) -> bool:
        return self.db.execute("SELECT 1 FROM alerts WHERE rule = ? AND topic = ? AND window_start = ?",
                               (rule, topic, window_start)).fetchone() is not None

    def last_alert(self, rule: str, topic: str, before: float) -> float | None:
        return self.db.execute("SELECT MAX(window_start) FROM alerts WHERE rule = ? AND topic = ? AND window_start < ?",
                               (rule, topic, before)).fetchone()[0]

    def add_alert(self, alert: dict) -> None:
        self.db.execute("INSERT INTO alerts (rule, topic, window_start, window_end, why, facts, evidence) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (alert["rule"], alert["topic"], alert["window_start"], alert["window_end"], alert["why"],
                         json.dumps(alert["facts"]), json.dumps(alert["evidence"], ensure_ascii=False)))

    def alerts(self, undelivered_only: bool = False) -> list[dict]:
        query = "SELECT id, rule, topic, window_start, window_end, why, facts, evidence, delivered FROM alerts"
        rows = self.db.execute(query + (" WHERE delivered = 0" if undelivered_only else "") + " ORDER BY id")
        return [{"id": i, "rule": r, "topic": t, "window_start": s, "window_end": e, "why": w, "facts": json.loads(f),
                 "evidence": json.loads(ev), "delivered": bool(d)} for i, r, t, s, e, w, f, ev, d in rows]

    def mark_delivered(self, alert_id: int) -> None:
        self.db.execute("UPDATE alerts SET delivered = 1 WHERE id = ?", (alert_id,))

    def close(self) -> None:
        self.db.close()
