"""`tunesmith monitor --sentiment RUN --source FILE|DIR|-`: score a stream of texts, keep
per-topic aggregates over time, and alert when negative content surges (tunesmith.monitor).

Without --follow it reads what is there and stops (a replay); with --follow it keeps reading
files as they grow and folders as files appear, until Ctrl-C. Either way it can be stopped at
any moment and run again with the same --store: it continues after the last committed line.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunesmith.databases import redacted
from tunesmith.durations import parse_duration
from tunesmith.errors import UserError
from tunesmith.io import write_text
from tunesmith.monitor import report, rules as alert_rules
from tunesmith.monitor.pipeline import Pipeline
from tunesmith.monitor.scoring import Scorer
from tunesmith.monitor.sinks import Sinks
from tunesmith.monitor.store import Store
from tunesmith.monitor.stream import StdinLines, files_of, read_file

BATCH = 64  # texts scored together: sorted batches of 32 are the predictor's sweet spot, two of them
RETAIN = "90d"  # items (texts included) kept, in event time: a quarter of trend, bounded disk; alerts stay


def monitor(sentiment: str, source: str, store_path: str = "monitor.db", rules: str | None = None,
            topics_from: str | None = None, keywords: str | None = None, topic: str | None = None,
            negative_label: str | None = None, text_col: str | None = None, alerts_jsonl: str | None = None,
            webhook: str | None = None, follow: bool = False, poll: float = 2.0, batch: int = BATCH,
            report_path: str | None = None, retain: str = RETAIN, log=print, stdin=None, sleep=time.sleep) -> dict:
    """Run the monitor; returns counts (texts scored, skipped lines, alerts)."""
    if source != "-":
        files_of(Path(source))  # a missing source is refused before the store file is made
    pipeline = _pipeline(sentiment, store_path, rules, topics_from, keywords, topic, negative_label, alerts_jsonl,
                         webhook, retain, log)
    store, checked = pipeline.store, pipeline.rules
    reader = _Reader(source, store, text_col, stdin, growing=follow)
    try:
        pipeline.deliver()  # what a previous run stored but could not send
        while True:
            items, positions, skipped = reader.next(batch)
            for problem in skipped:
                log(f"skipped: {problem}")
            pipeline.totals.update(skipped=len(skipped))
            if not items and not positions:
                if not follow and reader.exhausted:
                    break
                sleep(poll)
                continue
            pipeline.process(items, positions)
    except KeyboardInterrupt:
        log("interrupted: run the same command to continue after the last committed line")
        raise
    finally:
        if report_path:
            write_text(report_path, report.render(store, checked.window_s))
        store.close()
    counts = {key: pipeline.totals[key] for key in ("scored", "skipped", "expired", "alerts")}
    expired = f", {counts['expired']:,} older than --retain" if counts["expired"] else ""
    log(f"monitor: {counts['scored']:,} texts scored, {counts['skipped']} lines skipped{expired}, {counts['alerts']} alerts; "
        f"store {redacted(store_path)}" + (f", report {report_path}" if report_path else ""))
    return counts


def serve_monitor(sentiment: str, store_path: str = "monitor.db", rules: str | None = None,
                  topics_from: str | None = None, keywords: str | None = None, topic: str | None = None,
                  negative_label: str | None = None, alerts_jsonl: str | None = None, webhook: str | None = None,
                  host: str = "127.0.0.1", port: int = 8090, retain: str = RETAIN, log=print) -> None:
    """`monitor --serve`: texts arrive by POST /v1/ingest instead of from a file."""
    import uvicorn

    from tunesmith.monitor.service import create_app
    from tunesmith.serve.keyed import keys_from_env, refuse_open_host

    keys = keys_from_env()
    refuse_open_host(host, keys, "the monitor")
    pipeline = _pipeline(sentiment, store_path, rules, topics_from, keywords, topic, negative_label, alerts_jsonl,
                         webhook, retain, log)
    pipeline.deliver()
    log(f"monitor: POST texts to http://{host}:{port}/v1/ingest" + (" (API keys on)" if keys else ""))
    try:
        uvicorn.run(create_app(pipeline, keys, pipeline.rules.window_s, host), host=host, port=port, log_level="warning")
    finally:
        pipeline.store.close()


def _pipeline(sentiment, store_path, rules, topics_from, keywords, topic, negative_label, alerts_jsonl, webhook,
              retain, log) -> Pipeline:
    """Rules, sinks, scorer and store, each refusing bad settings before any text is read."""
    from tunesmith.inference import Predictor
    from tunesmith.runs import open_finished

    checked = alert_rules.load_rules(rules)
    retain_s = retention(retain, checked)
    sinks = Sinks(log, alerts_jsonl, webhook)  # refuses a webhook without its secret
    scorer = Scorer(Predictor.from_run(open_finished(sentiment)), negative_label, topics_from, keywords,
                    Predictor.from_run(open_finished(topic)) if topic else None)
    return Pipeline(scorer, Store(store_path), checked, sinks, retain_s)


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

    def __init__(self, source: str, store: Store, text_col: str | None, stdin=None, growing: bool = False):
        self.stdin = StdinLines(stdin, text_col) if source == "-" else None
        self.path = None if source == "-" else Path(source)
        self.store, self.text_col, self.growing = store, text_col, growing
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
            items, at = read_file(path, before, self.text_col, skipped, limit, self.growing)
            if at != before:
                return items, {key: at}, skipped
        self.exhausted = True
        return [], {}, skipped
