"""One batch through the monitor, the same for a file being read and an HTTP ingest: refuse
items dated too far ahead of this machine's clock, skip the ids already stored and the texts
older than the retention horizon, score the rest, then one transaction holds the items, the
alerts they trigger, the read positions after them and the expiry of items past the horizon.
Alerts are delivered after the commit, by a `Deliverer` of their own (deliver.py): an outage
of a sink never holds up ingestion.

Time: items carry their own (event) time. A time more than `future_tolerance_s` ahead of the
clock is a typo or a broken clock; it is refused, since one item dated 2999 would otherwise
move the retention horizon past every real item and delete them. The horizon is the clock
minus `--retain` for a live stream (`--serve`, `--follow`), and the newest event time minus
`--retain` for a replay of files, so a replay keeps what the live stream kept.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from tunesmith.monitor import rules as alert_rules

FUTURE_TOLERANCE_S = 600.0  # clocks drift by seconds; a feed's timezone mistake is hours
MAX_TOPICS = 1000  # topics a store keeps apart; more (a client inventing topics) are refused


@dataclass(frozen=True)
class Clock:
    """How the pipeline reads time: `now()` (wall clock), whether the stream is live, and how
    far ahead of now an item may be dated."""

    live: bool = False
    future_tolerance_s: float = FUTURE_TOLERANCE_S
    now: object = time.time

    def too_far_ahead(self, moment: float) -> float | None:
        """Seconds past the tolerance `moment` lies ahead of now, or None."""
        ahead = moment - self.now()
        return ahead if ahead > self.future_tolerance_s else None


class Pipeline:
    def __init__(self, scorer, store, rules, retain_s: float | None = None, clock: Clock = Clock(),
                 max_topics: int = MAX_TOPICS):
        self.scorer, self.store, self.rules = scorer, store, rules
        self.retain_s = retain_s  # seconds of items kept; None keeps every item
        self.clock, self.max_topics = clock, max_topics
        self.lock = threading.Lock()  # one batch at a time: the store is one connection
        self.totals: Counter = Counter()  # scored, duplicates, expired, future, skipped, alerts, topics_refused
        self.alerts_by_rule: Counter = Counter()
        self.topics = {topic for topic, _ in store.topics()}  # kept in memory: the cap is checked per item
        self.deliverer = None  # the Deliverer woken after each commit (set by whoever starts it)

    def ahead_of_clock(self, moment: float) -> str | None:
        """What is wrong with an item dated `moment`, or None when it is not too far ahead."""
        ahead = self.clock.too_far_ahead(moment)
        if ahead is None:
            return None
        return (f"dated {_span(ahead)} ahead of this machine's clock (more than --future-tolerance "
                f"{_span(self.clock.future_tolerance_s)}); send UTC times (ISO 8601 with a zone, or Unix seconds)")

    def refuse_future(self, items: list) -> tuple[list, list[str]]:
        """The items dated within the tolerance, and a line naming each refused one."""
        kept, refused = [], []
        for item in items:
            problem = self.ahead_of_clock(item.time)
            if problem is None:
                kept.append(item)
            else:
                refused.append(f"item {item.id}: {problem}")
        return kept, refused

    def process(self, items: list, positions: dict | None = None) -> tuple[list[dict], list[str]]:
        """Score and store `items` (and move `positions`); returns the alerts they fired and a
        line for each item refused for its time."""
        items, refused = self.refuse_future(items)
        with self.lock:
            known = self.store.known([i.id for i in items])
            new = [i for i in items if i.id not in known]
            horizon = self._horizon(new)
            current = [i for i in new if horizon is None or i.time >= horizon]
            scored = self._capped(self.scorer.score(current))
            with self.store.transaction():
                touched = self.store.add(scored)
                fired = alert_rules.evaluate(self.rules, self.store, touched)
                for name, at in (positions or {}).items():
                    self.store.set_position(name, at)
                if horizon is not None:
                    self.store.expire(horizon)
            self.totals.update(scored=len(scored), duplicates=len(items) - len(new), expired=len(new) - len(current),
                               alerts=len(fired), future=len(refused))
            self.alerts_by_rule.update(a["rule"] for a in fired)
        if fired and self.deliverer is not None:
            self.deliverer.wake()
        return fired, refused

    def _capped(self, scored: list) -> list:
        """Each item's topics, less those past the cap of distinct topics (the item still
        counts in its other topics, "all" among them)."""
        for item in scored:
            allowed = []
            for topic in item.topics:
                if topic in self.topics or len(self.topics) < self.max_topics:
                    self.topics.add(topic)
                    allowed.append(topic)
                else:
                    self.totals.update(topics_refused=1)
            item.topics = allowed
        return scored

    def _horizon(self, new: list) -> float | None:
        """Time before which items are not kept (see the module's docstring)."""
        if self.retain_s is None:
            return None
        if self.clock.live:
            return self.clock.now() - self.retain_s
        stored = self.store.newest_time()
        times = [i.time for i in new] + ([stored] if stored is not None else [])
        return max(times) - self.retain_s if times else None


def _span(seconds: float) -> str:
    for size, unit in ((86_400 * 365, "years"), (86_400, "days"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}" if unit in ("years", "days") else f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
