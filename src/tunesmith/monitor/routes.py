"""The monitor's HTTP API (`tunesmith monitor --serve`): routes, their dependencies and handlers.

- POST /v1/ingest  {"items": [{"id": ..., "time": ..., "text": ..., <other fields>}]}: scored,
  stored and checked against the rules like a batch read from a file; answers the counts and
  the alerts fired. An item without an id gets a hash of its time and text, so a client that
  repeats a request does not count it twice.
- GET /v1/topics: each topic's texts and its latest window.
- GET /metrics: Prometheus counters and gauges.
- GET /healthz.

Every route but /healthz needs an API key (`Authorization: Bearer KEY`) when keys are set
(TUNESMITH_API_KEYS, as for `serve`); without keys the service listens on loopback only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from tunesmith.monitor.stream import BadLine, Item, parse_time
from tunesmith.serve.keyed import identify

MAX_ITEMS = 1000  # per request: a batch, not a bulk load (replay files with --source)
MAX_TEXT = 20_000  # characters per text


class IngestItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # other fields (a ticker, say) are kept for --topics-from
    id: str | None = Field(None, max_length=200)
    time: float | str | None = None
    text: str = Field(max_length=MAX_TEXT)


class IngestRequest(BaseModel):
    items: list[IngestItem] = Field(min_length=1, max_length=MAX_ITEMS)


@dataclass
class MonitorState:
    pipeline: Any  # monitor.pipeline.Pipeline
    keys: Any  # serve.security.KeyRing
    window_s: float


async def monitor_state(request: Request) -> MonitorState:
    return request.app.state.monitor


State = Annotated[MonitorState, Depends(monitor_state)]


async def caller(request: Request, state: State) -> str:
    return identify(request, state.keys)


Caller = Annotated[str, Depends(caller)]
router = APIRouter()


@router.post("/v1/ingest")
async def ingest(body: IngestRequest, _: Caller, state: State) -> dict:
    return await run_in_threadpool(ingest_items, state, body)


@router.get("/v1/topics")
async def topics(_: Caller, state: State) -> list[dict]:
    return await run_in_threadpool(topic_table, state)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(_: Caller, state: State) -> str:
    return await run_in_threadpool(prometheus, state)


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


# ---- handlers (run in a worker thread: scoring and SQLite block) ---------------------------

def ingest_items(state: MonitorState, body: IngestRequest) -> dict:
    import time

    items = []
    for index, raw in enumerate(body.items):
        fields = {k: str(v) for k, v in (raw.model_extra or {}).items()}
        try:
            moment = parse_time(raw.time, f"items[{index}]") if raw.time is not None else time.time()
        except BadLine as exc:
            raise HTTPException(422, str(exc)) from None
        problem = state.pipeline.ahead_of_clock(moment)
        if problem is not None:  # counted as refused, and nothing of this request is stored
            with state.pipeline.lock:  # the totals are the pipeline's, counted under its lock
                state.pipeline.totals.update(future=1)
            raise HTTPException(422, f"items[{index}]: {problem}")
        key = raw.id or "http:" + hashlib.sha1(f"{moment}\n{raw.text}".encode("utf-8")).hexdigest()[:16]
        items.append(Item(key, moment, raw.text, fields))
    before = dict(state.pipeline.totals)
    fired, _ = state.pipeline.process(items)
    return {"received": len(items), "scored": state.pipeline.totals["scored"] - before.get("scored", 0),
            "duplicates": state.pipeline.totals["duplicates"] - before.get("duplicates", 0),
            "alerts": [{"rule": a["rule"], "topic": a["topic"], "window_start": a["window_start"], "why": a["why"]}
                       for a in fired]}


def topic_table(state: MonitorState) -> list[dict]:
    """Each topic's texts and latest window: two queries, however many topics."""
    store, size = state.pipeline.store, state.window_s
    with state.pipeline.lock:
        counts, windows = store.topics(), store.latest_windows(size)
        rows = []
        for topic, count in counts:
            latest = windows[topic]
            rows.append({"topic": topic, "texts": count, "latest_window_start": latest[0],
                         "latest_window": {"texts": latest[1].count, "negative": latest[1].negatives,
                                           "share_negative": round(latest[1].share, 4),
                                           "mean_score": round(latest[1].mean_score, 4)}})
        return rows


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and line break escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(state: MonitorState) -> str:
    totals, lines = state.pipeline.totals, []

    def metric(name: str, kind: str, about: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP {name} {about}", f"# TYPE {name} {kind}"])
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples if not math.isnan(value))

    metric("tunesmith_monitor_texts_total", "counter", "Texts scored and stored.", [("", totals["scored"])])
    metric("tunesmith_monitor_duplicates_total", "counter", "Texts received again (same id) and not counted.",
           [("", totals["duplicates"])])
    metric("tunesmith_monitor_expired_total", "counter", "Texts older than the retention horizon, not counted.",
           [("", totals["expired"])])
    metric("tunesmith_monitor_refused_total", "counter", "Texts refused, per reason: future (dated too far ahead "
           "of the clock), topic (a new topic past --max-topics; the text still counts in its others).",
           [('{reason="future"}', totals["future"]), ('{reason="topic"}', totals["topics_refused"])])
    deliveries = state.pipeline.deliverer.counts if state.pipeline.deliverer is not None else {}
    metric("tunesmith_monitor_webhook_total", "counter", "Webhook posts, per outcome: sent, failed (tried "
           "again later), dead_letter (refused by the receiver; not sent again).",
           [(f'{{outcome="{name}"}}', deliveries.get(key, 0))
            for name, key in (("sent", "webhook_sent"), ("failed", "webhook_failed"), ("dead_letter", "dead_letters"))])
    metric("tunesmith_monitor_alerts_total", "counter", "Alerts fired, per rule.",
           [(f'{{rule="{_label(rule)}"}}', n) for rule, n in sorted(state.pipeline.alerts_by_rule.items())])
    table = topic_table(state)
    metric("tunesmith_monitor_topic_texts", "gauge", "Texts stored per topic.",
           [(f'{{topic="{_label(t["topic"])}"}}', t["texts"]) for t in table])
    metric("tunesmith_monitor_topic_share_negative", "gauge", "Share of negative texts in the topic's latest window.",
           [(f'{{topic="{_label(t["topic"])}"}}', t["latest_window"]["share_negative"]) for t in table])
    return "\n".join(lines) + "\n"
