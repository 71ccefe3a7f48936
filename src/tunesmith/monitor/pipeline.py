"""One batch through the monitor, the same for a file being read and an HTTP ingest: skip the
ids already stored and the texts older than the retention horizon, score the rest, then one
transaction holds the items, the alerts they trigger, the read positions after them and the
expiry of items past the horizon; alerts are delivered after the commit."""

from __future__ import annotations

import threading
from collections import Counter

from tunesmith.monitor import rules as alert_rules


class Pipeline:
    def __init__(self, scorer, store, rules, sinks, retain_s: float | None = None):
        self.scorer, self.store, self.rules, self.sinks = scorer, store, rules, sinks
        self.retain_s = retain_s  # event-time seconds of items kept; None keeps every item
        self.lock = threading.Lock()  # one batch at a time: the store is one SQLite connection
        self.totals: Counter = Counter()  # scored, duplicates, expired, skipped, alerts (for /metrics)
        self.alerts_by_rule: Counter = Counter()

    def process(self, items: list, positions: dict | None = None) -> list[dict]:
        """Score and store `items` (and move `positions`); returns the alerts they fired."""
        with self.lock:
            new = [i for i in items if i.id not in self.store.known([i.id for i in items])]
            horizon = self._horizon(new)
            current = [i for i in new if horizon is None or i.time >= horizon]
            scored = self.scorer.score(current)
            with self.store.transaction():
                touched = self.store.add(scored)
                fired = alert_rules.evaluate(self.rules, self.store, touched)
                for name, at in (positions or {}).items():
                    self.store.set_position(name, at)
                if horizon is not None:
                    self.store.expire(horizon)
            self.totals.update(scored=len(scored), duplicates=len(items) - len(new), expired=len(new) - len(current),
                               alerts=len(fired))
            self.alerts_by_rule.update(a["rule"] for a in fired)
            self.deliver()
            return fired

    def _horizon(self, new: list) -> float | None:
        """Event time before which items are not kept: the newest time seen minus the retention."""
        if self.retain_s is None:
            return None
        stored = self.store.newest_time()
        times = [i.time for i in new] + ([stored] if stored is not None else [])
        return max(times) - self.retain_s if times else None

    def deliver(self) -> None:
        """Send what is stored but not yet delivered (after an outage or a restart too)."""
        for alert in self.store.alerts(undelivered_only=True):
            if self.sinks.deliver(alert):
                self.store.mark_delivered(alert["id"])
