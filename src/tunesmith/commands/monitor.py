"""`tunesmith monitor --sentiment RUN --source FILE|DIR|-`: score a stream of texts, keep
per-topic aggregates over time, and alert when negative content surges (tunesmith.monitor).

Without --follow it reads what is there and stops (a replay); with --follow it keeps reading
files as they grow and folders as files appear, until Ctrl-C. Either way it can be stopped at
any moment and run again with the same --store: it continues after the last committed line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field

from tunesmith.databases import redacted
from tunesmith.durations import parse_duration
from tunesmith.errors import UserError
from tunesmith.io import write_text
from tunesmith.monitor import deliver, report, rules as alert_rules
from tunesmith.monitor.pipeline import MAX_TOPICS, Clock, Pipeline
from tunesmith.monitor.scoring import Scorer
from tunesmith.monitor.sinks import Sinks
from tunesmith.monitor.store import Store
from tunesmith.monitor.stream import Position, StdinLines, files_of, read_file

BATCH = 64  # texts scored together: sorted batches of 32 are the predictor's sweet spot, two of them
RETAIN = "90d"  # items (texts included) kept, in event time: a quarter of trend, bounded disk; alerts stay


class MonitorArgs(BaseModel):
    """`tunesmith monitor --sentiment RUN --source FILE|DIR|-` (or `--serve`)."""

    sentiment: str = Field(description="finished sentiment run folder (its labels name the negative one)")
    source: Optional[str] = Field(None, description="CSV/TSV/JSONL file, a folder of them, or - (standard input); "
                                  "rows with a text and a time")
    serve: bool = Field(False, description="take texts over HTTP instead (POST /v1/ingest; GET /v1/topics, "
                        "/metrics); API keys from TUNESMITH_API_KEYS, required off loopback")
    host: str = Field("127.0.0.1", description="with --serve: address to listen on")
    port: int = Field(8090, ge=1, le=65535, description="with --serve: port")
    store: str = Field("monitor.db", description="where items, read positions and alerts are kept: a SQLite file, "
                       "or a PostgreSQL URL (postgresql://user:password@host/db; pip install 'tunesmith[postgres]'); "
                       "the same store continues a stopped monitor")
    rules: Optional[str] = Field(None, description="alert rules (YAML: window, threshold and surge rules; see docs). "
                                 "Default: 60%% negative, or a surge of z >= 3, in 1-hour windows of at least 20 texts")
    topics_from: Optional[str] = Field(None, description="a field of the stream that names each text's topic "
                                       "(e.g. ticker)")
    keywords: Optional[str] = Field(None, description="YAML file: topic -> words or cashtags a text of that topic "
                                    "contains")
    topic: Optional[str] = Field(None, description="finished topic-classifier run folder that gives each text its "
                                 "topic")
    negative_label: Optional[str] = Field(None, description="the sentiment run's negative label (default: read from "
                                          "the label names)")
    text_col: Optional[str] = Field(None, description="the text field (default: text, content, sentence, message, "
                                    "tweet, ...)")
    alerts: Optional[str] = Field(None, description="append every alert as one JSON line to this file")
    webhook: Optional[str] = Field(None, description="POST every alert here (https), signed with "
                                   "TUNESMITH_WEBHOOK_SECRET")
    follow: bool = Field(False, description="keep reading as files grow, until Ctrl-C")
    poll: str = Field("2s", description="with --follow: how often to look for new lines")
    batch: int = Field(BATCH, gt=0, description="texts scored together")
    report: Optional[str] = Field(None, description="write an HTML report (topics over time, alerts marked) here at "
                                  "the end")
    retain: str = Field(RETAIN, description="keep texts this long, then delete them (alerts stay): before this "
                        "machine's clock for a live stream (--serve, --follow), before the newest text's time for a "
                        "replay of files. At least the rules' look-back; 'forever' keeps all")
    future_tolerance: str = Field("10m", description="refuse texts dated more than this ahead of this machine's "
                                  "clock (a wrong timezone or a typo, which would otherwise count as the newest "
                                  "time); 422 over HTTP, a skipped line from a file")
    max_topics: int = Field(MAX_TOPICS, gt=0, description="most distinct topics kept apart; a text whose topic "
                            "would be one more still counts in its other topics (\"all\" among them)")


def main(args: MonitorArgs) -> None:
    """The verb: a stream read from --source, or texts taken over HTTP with --serve."""
    if (args.source is None) == (not args.serve):
        raise UserError("monitor: give --source FILE|DIR|- to read texts, or --serve to take them over HTTP (one)")
    if args.serve:
        serve_monitor(args)
    else:
        monitor(args)


def monitor(args: MonitorArgs, log=print, stdin=None, sleep=time.sleep) -> dict:
    """Run the monitor over `args.source`; returns counts (texts scored, skipped lines, alerts)."""
    source, follow = args.source, args.follow
    poll = parse_duration(args.poll, "--poll")
    if source != "-":
        files_of(Path(source))  # a missing source is refused before the store file is made
    pipeline, deliverer = _pipeline(args, log, live=follow)
    store, checked = pipeline.store, pipeline.rules
    reader = _Reader(source, store, args.text_col, stdin, growing=follow, log=log)
    flush_s = deliver.FLUSH_S  # a replay that ends tries a while longer to deliver what it owes
    try:
        while True:
            items, positions, skipped = reader.next(args.batch)
            if not items and not positions:
                _skip(pipeline, skipped, log)
                if not follow and reader.exhausted:
                    break
                sleep(poll)
                continue
            _, refused = pipeline.process(items, positions)
            _skip(pipeline, skipped + refused, log)
    except KeyboardInterrupt:
        deliverer.stop()  # what is owed stays in the store for the next run
        log("interrupted: run the same command to continue after the last committed line")
        raise
    finally:
        deliverer.stop(flush_s)
        if args.report:
            write_text(args.report, report.render(store, checked.window_s))
        store.close()
    counts = {key: pipeline.totals[key] for key in ("scored", "skipped", "expired", "alerts")}
    expired = f", {counts['expired']:,} older than --retain" if counts["expired"] else ""
    log(f"monitor: {counts['scored']:,} texts scored, {counts['skipped']} lines skipped{expired}, {counts['alerts']} alerts; "
        f"store {redacted(args.store)}" + (f", report {args.report}" if args.report else ""))
    return counts


def serve_monitor(args: MonitorArgs, log=print) -> None:
    """`monitor --serve`: texts arrive by POST /v1/ingest instead of from a file."""
    from tunesmith.monitor.service import create_app
    from tunesmith.serve.keyed import keys_from_env, refuse_open_host, run_server

    keys = keys_from_env()
    refuse_open_host(args.host, keys, "the monitor")
    pipeline, deliverer = _pipeline(args, log, live=True)
    log(f"monitor: POST texts to http://{args.host}:{args.port}/v1/ingest" + (" (API keys on)" if keys else ""))
    try:
        run_server(create_app(pipeline, keys, pipeline.rules.window_s, args.host), args.host, args.port)
    finally:
        deliverer.stop()
        pipeline.store.close()


def _skip(pipeline: Pipeline, problems: list[str], log) -> None:
    for problem in problems:
        log(f"skipped: {problem}")
    pipeline.totals.update(skipped=len(problems))


def _pipeline(args: MonitorArgs, log, live: bool) -> tuple[Pipeline, deliver.Deliverer]:
    """Rules, sinks, scorer and store, each refusing bad settings before any text is read, and
    the deliverer already sending what an earlier run stored but could not send."""
    from tunesmith.inference import Predictor
    from tunesmith.runs import open_finished

    checked = alert_rules.load_rules(args.rules)
    retain_s = retention(args.retain, checked)
    clock = Clock(live=live, future_tolerance_s=parse_duration(args.future_tolerance, "--future-tolerance"))
    sinks = Sinks(log, args.alerts, args.webhook)  # refuses a webhook without its secret
    scorer = Scorer(Predictor.from_run(open_finished(args.sentiment)), args.negative_label, args.topics_from,
                    args.keywords, Predictor.from_run(open_finished(args.topic)) if args.topic else None)
    store = Store(args.store)
    try:
        store.claim()  # one monitor per store: two would both score and both send every alert
    except BaseException:
        store.close()
        raise
    pipeline = Pipeline(scorer, store, checked, retain_s, clock, args.max_topics)
    pipeline.deliverer = deliver.Deliverer(store, pipeline.lock, sinks).start()
    return pipeline, pipeline.deliverer


def retention(retain: str, checked) -> float | None:
    """`--retain` in seconds (None: "forever"), refused when shorter than the rules look back."""
    if str(retain).strip().lower() == "forever":
        return None
    seconds = parse_duration(retain, "--retain")
    if seconds < checked.history_s:
        raise UserError(f"--retain {retain}: shorter than the alert rules look back ({checked.history_s / 3600:g}h: the "
                        "current window and the surge baseline); keep at least that, or 'forever'")
    return seconds


class _Reader:
    """The next batch from the source: items, the read positions after them, skipped lines."""

    def __init__(self, source: str, store: Store, text_col: str | None, stdin=None, growing: bool = False,
                 log=print):
        self.stdin = StdinLines(stdin, text_col) if source == "-" else None
        self.path = None if source == "-" else Path(source)
        self.store, self.text_col, self.growing, self.log = store, text_col, growing, log
        self.exhausted = False

    def next(self, limit: int):
        skipped: list[str] = []
        if self.stdin is not None:
            items = self.stdin.read(limit, skipped)
            self.exhausted = self.stdin.ended
            return items, {}, skipped
        for path in files_of(self.path):
            key = str(path.resolve())
            before = self.store.position(key)
            if before.offset > path.stat().st_size:  # emptied in place (logrotate's copytruncate): read it anew
                self.log(f"{path}: shorter than the {before.offset:,} bytes already read (rotated in place?); "
                         f"reading it from the start, line numbers going on from {before.line}")
                before = Position(0, before.line)
            items, at = read_file(path, before, self.text_col, skipped, limit, self.growing)
            if at != before:
                return items, {key: at}, skipped
        self.exhausted = True
        return [], {}, skipped
