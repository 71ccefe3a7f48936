"""Prometheus metrics (text exposition format) and JSON-line logs.

The metrics are written by hand rather than with prometheus_client: five metric families
do not justify a dependency, and the format is a few lines of text.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from contextvars import ContextVar

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)  # set per request by middleware.Observe


class Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        out.append(f"{name}_sum{{{labels}}} {self.sum}" if labels else f"{name}_sum {self.sum}")
        out.append(f"{name}_count{{{labels}}} {self.total}" if labels else f"{name}_count {self.total}")
        return out


class Metrics:
    def __init__(self, model_info: dict[str, str]):
        self.model_info = model_info
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = defaultdict(lambda: Histogram(LATENCY_BUCKETS))
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.queue_depth = lambda: 0
        # Generation runs: answers waiting to join the decoding batch, in it, and tokens made.
        self.generation_waiting = lambda: 0
        self.generation_active = lambda: 0
        self.generated_tokens = 0

    def record(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.latency[route].observe(seconds)

    def render(self) -> str:
        lines = ["# HELP tunesmith_requests_total Requests by route and status.",
                 "# TYPE tunesmith_requests_total counter"]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(f'tunesmith_requests_total{{route="{route}",status="{status}"}} {count}')
        lines += ["# HELP tunesmith_request_duration_seconds Request latency.",
                  "# TYPE tunesmith_request_duration_seconds histogram"]
        for route, hist in sorted(self.latency.items()):
            lines += hist.lines("tunesmith_request_duration_seconds", f'route="{route}"')
        lines += ["# HELP tunesmith_batch_size Texts per inference micro-batch.", "# TYPE tunesmith_batch_size histogram"]
        lines += self.batch_size.lines("tunesmith_batch_size")
        lines += ["# HELP tunesmith_queue_depth Requests waiting for a micro-batch.", "# TYPE tunesmith_queue_depth gauge",
                  f"tunesmith_queue_depth {self.queue_depth()}"]
        lines += ["# HELP tunesmith_generation_waiting Answers waiting to join the decoding batch.",
                  "# TYPE tunesmith_generation_waiting gauge", f"tunesmith_generation_waiting {self.generation_waiting()}",
                  "# HELP tunesmith_generation_active Answers being decoded.",
                  "# TYPE tunesmith_generation_active gauge", f"tunesmith_generation_active {self.generation_active()}",
                  "# HELP tunesmith_generated_tokens_total Tokens generated.",
                  "# TYPE tunesmith_generated_tokens_total counter", f"tunesmith_generated_tokens_total {self.generated_tokens}"]
        info = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(self.model_info.items()))
        lines += ["# HELP tunesmith_model_info The model being served.", "# TYPE tunesmith_model_info gauge",
                  f"tunesmith_model_info{{{info}}} 1"]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class JsonLog:
    """One JSON object per line on stderr. Never given raw request text unless masked."""

    def __init__(self, stream=None):
        self.logger = logging.getLogger("tunesmith.serve")
        if not self.logger.handlers:
            handler = logging.StreamHandler(stream or sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(handler)
            self.logger.propagate = False
        if self.logger.level == logging.NOTSET:  # else the root's WARNING would drop the access log
            self.logger.setLevel(logging.INFO)

    def event(self, event: str, level: int = logging.INFO, **fields) -> None:
        record = {"ts": round(time.time(), 3), "level": logging.getLevelName(level).lower(), "event": event, **fields}
        if REQUEST_ID.get() is not None:
            record["request_id"] = REQUEST_ID.get()
        self.logger.log(level, json.dumps(record, ensure_ascii=False))
