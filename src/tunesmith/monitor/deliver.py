"""Alerts from the store to the sinks, on a thread of their own, so that a sink's outage never
holds up ingestion, /metrics or /v1/topics.

Each alert goes to the log and the JSONL file once (`sent_local`), whatever the webhook does.
The webhook is tried again with a growing wait (BACKOFF_S doubled, at most MAX_BACKOFF_S) while
its answers say "later" (a 5xx, a timeout, 408/425/429, no connection), and given up on
(dead-lettered: `webhook_state` 2, counted, logged) when they say "never" (any other 4xx). The
store keeps both marks, so a restart sends exactly what is still owed. The store is touched only
under the pipeline's lock; posting happens outside it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from tunesmith.monitor.sinks import PERMANENT

BACKOFF_S = 1.0  # the first wait after a failed post
MAX_BACKOFF_S = 300.0  # a receiver down for hours is tried every five minutes
FLUSH_S = 30.0  # at the end of a replay, how long to keep trying before leaving alerts for the next run


class Deliverer:
    def __init__(self, store, lock: threading.Lock, sinks, clock=time.monotonic):
        self.store, self.lock, self.sinks, self.clock = store, lock, sinks, clock
        self.counts: Counter = Counter()  # webhook_sent, webhook_failed, dead_letters
        self._due: dict[int, tuple[float, float]] = {}  # alert id -> (next try, current wait)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the thread ----------------------------------------------------------------------
    def start(self) -> "Deliverer":
        self._thread = threading.Thread(target=self._run, name="tunesmith-deliver", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, flush_s: float = 0.0) -> None:
        """Stop the thread after one last pass; with `flush_s`, keep delivering what is owed for
        up to that long. Stopping again does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush(flush_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.deliver_due()
            self._wake.wait(timeout=wait)
            self._wake.clear()

    # ---- one pass ------------------------------------------------------------------------
    def flush(self, seconds: float) -> None:
        """Passes until nothing is owed or `seconds` have gone by."""
        end = self.clock() + seconds
        while True:
            wait = self.deliver_due()
            if wait is None or self.clock() + wait > end:
                return
            time.sleep(max(0.0, wait))

    def deliver_due(self) -> float | None:
        """Deliver every owed alert that is due; seconds until the next one is, None when none is owed."""
        with self.lock:
            owed = self.store.alerts(undelivered_only=True)
        now, next_due = self.clock(), None
        for alert in owed:
            if not alert["sent_local"]:
                self.sinks.local(alert)
                with self.lock:
                    self.store.mark_sent_local(alert["id"])
            if not self.sinks.webhook or alert["webhook_state"] != 0:
                with self.lock:
                    self.store.mark_delivered(alert["id"])
                continue
            at, wait = self._due.get(alert["id"], (now, BACKOFF_S))
            if at <= now:
                at = self._post(alert, wait)
            if at is not None:
                next_due = at if next_due is None else min(next_due, at)
        return None if next_due is None else max(0.0, next_due - self.clock())

    def _post(self, alert: dict, wait: float) -> float | None:
        """One POST of `alert`; when to try it again, or None when it is settled."""
        error = self.sinks.post(alert)
        if error is None:
            self.counts.update(webhook_sent=1)
            self._settle(alert["id"], 1)
            return None
        self.counts.update(webhook_failed=1)
        if error.startswith(PERMANENT):
            self.counts.update(dead_letters=1)
            self.sinks.log(f"webhook: alert {alert['id']} refused ({error}); not sent again (dead-lettered in the store)")
            self._settle(alert["id"], 2)
            return None
        at = self.clock() + wait
        self._due[alert["id"]] = (at, min(wait * 2, MAX_BACKOFF_S))
        self.sinks.log(f"webhook: alert {alert['id']} failed ({error}); trying again in {wait:.0f} s")
        return at

    def _settle(self, alert_id: int, state: int) -> None:
        self._due.pop(alert_id, None)
        with self.lock:
            self.store.mark_webhook(alert_id, state)
            self.store.mark_delivered(alert_id)
