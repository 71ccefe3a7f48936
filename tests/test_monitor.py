"""`tunesmith monitor`: a stream scored per topic and window, alert rules, restart safety,
signed webhooks, and the report. The sentiment run is the tiny BERT trained on the toy cues."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from conftest import CUES, FILLER, train_tiny_run
from tunesmith.cli import main
from tunesmith.commands import monitor as monitor_command
from tunesmith.errors import UserError
from tunesmith.monitor.store import Store

HOUR = 3600.0
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory, tiny_model) -> str:
    return str(train_tiny_run(tmp_path_factory.mktemp("monitor"), tiny_model, "full", "5", 30))


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store(request, tmp_path):
    """A factory of empty stores, each a new SQLite file or a new database on a test PostgreSQL
    server (the same tests run on both)."""
    if request.param == "sqlite":
        count = iter(range(1000))
        return lambda: str(tmp_path / f"store-{next(count)}.db")
    return request.getfixturevalue("postgres_database")


def text(rng: random.Random, mood: str) -> str:
    words = rng.sample(FILLER, 2) + rng.sample(CUES[mood], 2)
    rng.shuffle(words)
    return " ".join(words)


def stream_rows(seed: int = 0) -> list[dict]:
    """Eight quiet hours for two tickers (about 3 negative texts of 20 an hour each), then an
    hour in which ACME's negative texts surge (30 of 40); ZENO stays quiet throughout."""
    rng = random.Random(seed)
    rows = []
    for hour in range(9):
        for ticker in ("ACME", "ZENO"):
            surge = hour == 8 and ticker == "ACME"
            moods = ["negative"] * (30 if surge else 3) + ["positive"] * (10 if surge else 10) + ["neutral"] * 7
            for k, mood in enumerate(moods):
                rows.append({"id": f"{ticker}-{hour}-{k}", "time": START + hour * HOUR + k * 60 + rng.random(),
                             "ticker": ticker, "text": text(rng, mood)})
    rows.sort(key=lambda r: r["time"])
    return rows


def monitor(sentiment, source, store, rules=None, *, log=print, stdin=None, sleep=None, alerts_jsonl=None,
            report_path=None, **settings) -> dict:
    """The monitor over `source`, its settings as `tunesmith monitor` flags name them."""
    args = monitor_command.MonitorArgs(sentiment=sentiment, source=source, store=store, rules=rules,
                                       alerts=alerts_jsonl, report=report_path, **settings)
    return monitor_command.monitor(args, log=log, stdin=stdin, **({"sleep": sleep} if sleep else {}))


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_a_replay_fires_the_surge_and_threshold_alerts_on_the_surging_topic_only(sentiment, tmp_path, new_store):
    source = write_jsonl(tmp_path / "stream.jsonl", stream_rows())
    lines = []
    counts = monitor(sentiment, source, new_store(), topics_from="ticker",
                     alerts_jsonl=str(tmp_path / "alerts.jsonl"), report_path=str(tmp_path / "report.html"),
                     log=lines.append)
    assert counts["scored"] == len(stream_rows()) and counts["skipped"] == 0
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    fired = {(a["rule"], a["topic"], a["window_start"]) for a in alerts}
    surge_hour = START + 8 * HOUR
    # "all" mixes both tickers: 33 of 67 negative is below 60%, but the surge stands out there too.
    assert fired == {("negative-surge", "ACME", surge_hour), ("mostly-negative", "ACME", surge_hour),
                     ("negative-surge", "all", surge_hour)}, fired
    surge = next(a for a in alerts if a["rule"] == "negative-surge" and a["topic"] == "ACME")
    assert surge["facts"]["negatives"] >= 25 and surge["facts"]["z"] >= 3 and "z " in surge["why"]
    assert surge["evidence"] and all(e["id"].startswith("ACME-8-") for e in surge["evidence"])
    assert all(any(w in e["text"] for w in CUES["negative"]) for e in surge["evidence"])  # the texts that drove it
    log = "\n".join(lines)
    assert "negative-surge on topic 'ACME'" in log and "not-for-logs" not in log  # a PostgreSQL URL's password
    assert not any(e["text"] in log for e in surge["evidence"])  # no user text in the log
    html = (tmp_path / "report.html").read_text()
    assert "ACME" in html and "negative-surge" in html and html.count("<img") >= 3


def test_a_monitor_stopped_anywhere_continues_without_counting_twice_or_losing_alerts(sentiment, tmp_path,
                                                                                      monkeypatch, new_store):
    rows = stream_rows()
    straight, cut_store = new_store(), new_store()
    monitor(sentiment, write_jsonl(tmp_path / "s.jsonl", rows), straight, topics_from="ticker",
            batch=50, log=lambda _: None)

    # The same stream, written in two parts, with a crash inside the third batch's transaction.
    cut = tmp_path / "cut"
    cut.mkdir()
    source = cut / "s.jsonl"
    write_jsonl(source, rows[:200])
    calls = {"n": 0}
    original = Store.set_position

    def crash_on_third(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("power cut")
        return original(self, *args)

    with monkeypatch.context() as patch:
        patch.setattr(Store, "set_position", crash_on_third)
        with pytest.raises(RuntimeError):
            monitor(sentiment, str(source), cut_store, topics_from="ticker", batch=50, log=lambda _: None)
    monitor(sentiment, str(source), cut_store, topics_from="ticker", batch=50, log=lambda _: None)
    with open(source, "a", encoding="utf-8") as f:  # the stream grows; the monitor is run again
        f.write("".join(json.dumps(r) + "\n" for r in rows[200:]))
    monitor(sentiment, str(source), cut_store, topics_from="ticker", batch=50, log=lambda _: None)

    def state(where):
        store = Store(where)
        items = store.db.execute("SELECT id, topic, label FROM items ORDER BY id, topic").fetchall()
        alerts = [(a["rule"], a["topic"], a["window_start"], a["delivered"]) for a in store.alerts()]
        store.close()
        return items, alerts

    assert state(cut_store) == state(straight)
    assert len(state(cut_store)[0]) == 2 * len(rows)  # each item once in its ticker and once in "all"


class Receiver(BaseHTTPRequestHandler):
    failures_left = 0
    received: list = []

    refuse = False  # answer 400: the receiver will never take the alert

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.refuse:
            self.send_response(400)
        elif Receiver.failures_left:
            Receiver.failures_left -= 1
            self.send_response(503)
        else:
            Receiver.received.append((dict(self.headers), body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.received, Receiver.failures_left = [], 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def test_webhook_alerts_are_signed_retried_and_sent_again_after_an_outage(sentiment, tmp_path, monkeypatch, receiver):
    import tunesmith.monitor.deliver as deliver

    monkeypatch.setattr(deliver, "BACKOFF_S", 0.02)
    monkeypatch.setattr(deliver, "FLUSH_S", 0.3)  # a replay's last tries, before leaving alerts for the next run
    source = write_jsonl(tmp_path / "s.jsonl", stream_rows())
    with pytest.raises(UserError, match="TUNESMITH_WEBHOOK_SECRET"):
        monitor(sentiment, source, str(tmp_path / "x.db"), webhook=receiver, log=lambda _: None)
    monkeypatch.setenv("TUNESMITH_WEBHOOK_SECRET", "s3cret")

    Receiver.failures_left = 10**6  # the receiver is down for the whole first run
    lines = []
    monitor(sentiment, source, str(tmp_path / "m.db"), topics_from="ticker", webhook=receiver, log=lines.append,
            alerts_jsonl=str(tmp_path / "alerts.jsonl"))
    assert not Receiver.received and any("failed (HTTP 503); trying again" in line for line in lines)
    stored = Store(tmp_path / "m.db").alerts()
    assert len(stored) == 3 and all(not a["delivered"] for a in stored)
    # The other sinks do not wait for the webhook: the file and the log have every alert, once.
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 3 and all(a["sent_local"] for a in stored)

    Receiver.failures_left = 1  # back up, after one more failure: the retry delivers
    monitor(sentiment, source, str(tmp_path / "m.db"), topics_from="ticker", webhook=receiver, log=lambda _: None,
            alerts_jsonl=str(tmp_path / "alerts.jsonl"))
    assert len(Receiver.received) == 3  # the three stored alerts, each once
    for headers, body in Receiver.received:
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Tunesmith-Signature"] == expected
        assert json.loads(body)["id"] == int(headers["X-Tunesmith-Alert-Id"])
    assert all(a["delivered"] for a in Store(tmp_path / "m.db").alerts())
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 3  # not written again


def test_a_webhook_that_refuses_an_alert_dead_letters_it_instead_of_retrying_for_ever(sentiment, tmp_path,
                                                                                       monkeypatch, receiver):
    monkeypatch.setenv("TUNESMITH_WEBHOOK_SECRET", "s3cret")
    monkeypatch.setattr(Receiver, "refuse", True, raising=False)
    lines = []
    monitor(sentiment, write_jsonl(tmp_path / "s.jsonl", stream_rows()), str(tmp_path / "m.db"), topics_from="ticker",
            webhook=receiver, log=lines.append)
    stored = Store(tmp_path / "m.db").alerts()
    assert [a["webhook_state"] for a in stored] == [2, 2, 2] and all(a["delivered"] for a in stored)
    assert sum("refused (permanent: HTTP 400)" in line for line in lines) == 3


def test_a_webhook_outage_does_not_hold_up_ingestion(sentiment, tmp_path):
    """Delivery runs beside the pipeline: a post that hangs (a receiver that accepts and never
    answers) does not stop the next batch from being scored and stored."""
    from tunesmith.commands.monitor import MonitorArgs, _pipeline

    pipeline, deliverer = _pipeline(MonitorArgs(sentiment=sentiment, store=str(tmp_path / "m.db"), topics_from="ticker",
                                                retain="forever"), lambda _: None, live=False)
    hang, posted = threading.Event(), threading.Event()

    def stuck(url, body, headers):
        posted.set()
        hang.wait(30)
        return "TimeoutError"

    deliverer.sinks.webhook, deliverer.sinks.post_body, deliverer.sinks.secret = "https://x.example/", stuck, "s"
    rows = stream_rows()
    fired, _ = pipeline.process([_item(r) for r in rows[:-40]])
    fired += pipeline.process([_item(r) for r in rows[-40:]])[0]  # the surge hour: alerts fire
    assert fired and posted.wait(10)  # the deliverer is inside a post that hangs ...
    started = time.perf_counter()
    again, _ = pipeline.process([_item({**r, "id": r["id"] + "-b"}) for r in rows[:50]])
    assert time.perf_counter() - started < 5  # ... and ingestion goes on
    hang.set()
    deliverer.stop()
    pipeline.store.close()


def _item(row):
    from tunesmith.monitor.stream import Item

    return Item(row["id"], row["time"], row["text"], {"ticker": row["ticker"]})


def test_a_far_future_time_is_refused_and_cannot_expire_the_real_items(sentiment, tmp_path):
    """One item dated 2999 once set the retention horizon past every real item: the store lost
    them and every later item counted as expired. Now it is refused, over HTTP and from a file."""
    now = time.time()
    rows = [{"id": f"now-{k}", "time": now - 60 * k, "ticker": "ACME", "text": "fine day"} for k in range(3)]
    future = {"id": "typo", "time": "2999-01-01T00:00:00Z", "ticker": "ACME", "text": "from the future"}
    with _live_service(sentiment, tmp_path / "live.db", retain="30d") as (client, auth):
        assert client.post("/v1/ingest", json={"items": rows[:2]}, headers=auth).json()["scored"] == 2
        refused = client.post("/v1/ingest", json={"items": [future]}, headers=auth)
        assert refused.status_code == 422 and "items[0]: dated 973 years ahead" in refused.text
        assert client.post("/v1/ingest", json={"items": rows[2:]}, headers=auth).json()["scored"] == 1
        assert 'tunesmith_monitor_refused_total{reason="future"} 1' in client.get("/metrics", headers=auth).text
    held = Store(tmp_path / "live.db")
    assert sorted(r[0] for r in held.db.execute("SELECT id FROM items WHERE topic = 'all'")) == ["now-0", "now-1", "now-2"]
    held.close()

    lines = []
    counts = monitor(sentiment, write_jsonl(tmp_path / "s.jsonl", [rows[0], future, rows[1]]), str(tmp_path / "f.db"),
                     topics_from="ticker", retain="30d", log=lines.append)
    assert counts["scored"] == 2 and counts["skipped"] == 1
    assert any(line.startswith("skipped: item typo: dated 973 years ahead") for line in lines)


def test_a_live_stream_keeps_retain_before_the_clock_and_a_replay_before_its_own_newest_time(sentiment, tmp_path):
    from tunesmith.commands.monitor import MonitorArgs, _pipeline
    from tunesmith.monitor.pipeline import Clock

    rows = [_item(r) for r in stream_rows()]  # nine hours of January
    for live, kept in ((True, 0), (False, len(rows))):
        args = MonitorArgs(sentiment=sentiment, store=str(tmp_path / f"{live}.db"), retain="2d")
        pipeline, deliverer = _pipeline(args, lambda _: None, live=live)
        pipeline.clock = Clock(live=live, now=lambda: START + 30 * 86_400)  # a month later
        pipeline.process(rows)
        assert pipeline.store.db.execute("SELECT COUNT(*) FROM items WHERE topic = 'all'").fetchone()[0] == kept
        deliverer.stop()
        pipeline.store.close()


def test_two_monitors_cannot_share_a_store(sentiment, tmp_path):
    source = write_jsonl(tmp_path / "s.jsonl", stream_rows()[:10])
    first = Store(tmp_path / "m.db")
    first.claim()
    with pytest.raises(UserError, match="another monitor is using this store"):
        monitor(sentiment, source, str(tmp_path / "m.db"), log=lambda _: None)
    first.close()  # the claim goes with the process (or the store) that held it
    assert monitor(sentiment, source, str(tmp_path / "m.db"), log=lambda _: None)["scored"] == 10


def test_topics_are_capped_and_counted_and_the_topic_table_is_two_queries(sentiment, tmp_path):
    middle = (time.time() // 3600) * 3600 - 1800  # the middle of the last hour: one window holds every row
    rows = [{"id": f"t{k}", "time": middle + k, "ticker": f"T{k}", "text": "fine"} for k in range(30)]
    with _live_service(sentiment, tmp_path / "m.db", max_topics=11) as (client, auth):  # "all" and ten tickers
        assert client.post("/v1/ingest", json={"items": rows}, headers=auth).json()["scored"] == 30
        table = {row["topic"]: row["texts"] for row in client.get("/v1/topics", headers=auth).json()}
        assert table["all"] == 30 and len(table) == 11
        assert 'tunesmith_monitor_refused_total{reason="topic"} 20' in client.get("/metrics", headers=auth).text
    store = Store(tmp_path / "m.db")
    queries = []
    store.db.set_trace_callback(queries.append)
    assert store.latest_windows(3600.0)["all"][1].count == 30 and len(queries) == 1
    store.close()


@contextmanager
def _live_service(sentiment, store, **settings):
    from fastapi.testclient import TestClient

    from tunesmith.commands.monitor import MonitorArgs, _pipeline
    from tunesmith.monitor.service import create_app
    from tunesmith.serve.security import KeyRing

    pipeline, deliverer = _pipeline(MonitorArgs(sentiment=sentiment, store=str(store), topics_from="ticker",
                                                **settings), lambda _: None, live=True)
    key = "k" * 32
    try:
        yield (TestClient(create_app(pipeline, KeyRing([key]), pipeline.rules.window_s), base_url="http://localhost"),
               {"Authorization": f"Bearer {key}"})
    finally:
        deliverer.stop()
        pipeline.store.close()


def test_follow_reads_a_growing_file_and_waits_for_a_line_being_written(sentiment, tmp_path):
    rows = stream_rows()
    source = tmp_path / "live.jsonl"
    write_jsonl(source, rows[:100])
    with open(source, "a", encoding="utf-8") as f:
        f.write(json.dumps(rows[100])[:20])  # half a line: the writer is still at it
    polls = {"n": 0}

    def sleep(_):
        polls["n"] += 1
        if polls["n"] == 1:
            with open(source, "a", encoding="utf-8") as f:
                f.write(json.dumps(rows[100])[20:] + "\n" + "".join(json.dumps(r) + "\n" for r in rows[101:]))
        else:
            raise KeyboardInterrupt

    lines = []
    with pytest.raises(KeyboardInterrupt):
        # January's rows in a live stream: kept whole (a live stream keeps --retain before now)
        monitor(sentiment, str(source), str(tmp_path / "m.db"), topics_from="ticker", follow=True, sleep=sleep,
                log=lines.append, retain="forever")
    store = Store(tmp_path / "m.db")
    assert store.db.execute("SELECT COUNT(DISTINCT id) FROM items").fetchone()[0] == len(rows)
    assert any(a["rule"] == "negative-surge" for a in store.alerts())
    assert "run the same command to continue" in lines[-1]


def test_standard_input_bad_lines_and_bad_rules(sentiment, tmp_path, capsys):
    import io

    rows = stream_rows()[:30]
    stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in rows[:10]) + "not json\n"
                        + json.dumps({**rows[10], "time": "yesterday"}) + "\n"
                        + "".join(json.dumps(r) + "\n" for r in rows[11:]))
    lines = []
    counts = monitor(sentiment, "-", str(tmp_path / "m.db"), topics_from="ticker", stdin=stdin, log=lines.append)
    assert counts == {"scored": 29, "skipped": 2, "expired": 0, "alerts": 0}
    assert any("standard input line 11: not a JSON object" in line for line in lines)
    assert any("standard input line 12: time 'yesterday'" in line for line in lines)

    rules = tmp_path / "rules.yaml"
    for body, message in (("window: 1h\nrules:\n  - name: x\n    kind: threshold\n", "needs share_negative"),
                          ("rules:\n  - name: x\n    kind: spike\n", "rules.0.kind"),
                          ("window: soon\nrules: []\n", "give a duration")):
        rules.write_text(body)
        assert main(["monitor", "--sentiment", sentiment, "--source", "-", "--rules", str(rules)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert main(["monitor", "--sentiment", sentiment, "--source", str(tmp_path / "nowhere.csv"), "--store",
                 str(tmp_path / "never.db")]) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "never.db").exists()


def test_retention_deletes_old_texts_without_changing_the_alerts(sentiment, tmp_path, capsys):
    """Texts older than --retain (in event time) are deleted as the stream moves on, a late text
    older than that is not counted, and the alerts are those of a monitor that keeps everything:
    a retention shorter than the rules' look-back is refused before any work."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("window: 1h\nrules:\n  - name: surge\n    kind: surge\n    baseline: 3\n    min_volume: 20\n")
    rows = stream_rows()
    source = write_jsonl(tmp_path / "stream.jsonl", rows)
    fired = {}
    for retain in ("forever", "5h"):
        store = tmp_path / f"{retain}.db"
        monitor(sentiment, source, str(store), str(rules), topics_from="ticker", retain=retain,
                alerts_jsonl=str(tmp_path / f"{retain}.jsonl"), log=lambda _: None)
        fired[retain] = {(a["rule"], a["topic"], a["window_start"])
                         for a in map(json.loads, (tmp_path / f"{retain}.jsonl").read_text().splitlines())}
    assert fired["5h"] == fired["forever"] and ("surge", "ACME", START + 8 * HOUR) in fired["5h"]
    kept = Store(tmp_path / "5h.db")
    newest = max(r["time"] for r in rows)
    assert kept.db.execute("SELECT MIN(time) FROM items").fetchone()[0] >= newest - 5 * HOUR
    assert dict(Store(tmp_path / "forever.db").topics())["all"] == len(rows) > dict(kept.topics())["all"]

    late = write_jsonl(tmp_path / "late.jsonl", [{"id": "late-1", "time": START, "ticker": "ACME", "text": "late"}])
    counts = monitor(sentiment, late, str(tmp_path / "5h.db"), str(rules), topics_from="ticker", retain="5h",
                     log=lambda _: None)
    assert counts["expired"] == 1 and counts["scored"] == 0

    assert main(["monitor", "--sentiment", sentiment, "--source", source, "--rules", str(rules), "--retain", "3h",
                 "--store", str(tmp_path / "never.db")]) == 2
    err = capsys.readouterr().err
    assert "--retain 3h: shorter than the alert rules look back (4h" in err and not (tmp_path / "never.db").exists()


def test_keyword_topics_and_a_csv_source(sentiment, tmp_path):
    rng = random.Random(3)
    lines = ["id,created_at,text"]
    for k in range(60):
        mood = "negative" if k % 2 else "positive"
        ticker = "$ACME" if k % 3 else "zeno"
        lines.append(f"{k},2026-01-01T{k % 24:02d}:00:00Z,{ticker} {text(rng, mood)}")
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "kw.yaml").write_text("acme: [$acme, acme corp]\nzeno: [zeno]\n", encoding="utf-8")
    monitor(sentiment, str(tmp_path / "s.csv"), str(tmp_path / "m.db"), keywords=str(tmp_path / "kw.yaml"),
            log=lambda _: None)
    topics = dict(Store(tmp_path / "m.db").topics())
    assert topics == {"all": 60, "acme": 40, "zeno": 20}


def _service(sentiment, tmp_path, keys=("k" * 24,)):
    from fastapi.testclient import TestClient

    from tunesmith.commands.monitor import MonitorArgs, _pipeline
    from tunesmith.monitor.service import create_app
    from tunesmith.serve.security import KeyRing

    # The fixture's stream is from January: kept whole here (a live stream keeps --retain before now).
    pipeline, _ = _pipeline(MonitorArgs(sentiment=sentiment, store=str(tmp_path / "m.db"), topics_from="ticker",
                                        retain="forever"), lambda _: None, live=True)
    return TestClient(create_app(pipeline, KeyRing(list(keys)), pipeline.rules.window_s), base_url="http://localhost")


def test_the_service_ingests_over_http_with_keys_and_reports_metrics(sentiment, tmp_path):
    pytest.importorskip("fastapi")
    auth = {"Authorization": "Bearer " + "k" * 24}
    rows = stream_rows()
    with _service(sentiment, tmp_path) as client:
        assert client.post("/v1/ingest", json={"items": rows[:5]}).status_code == 401
        assert client.get("/metrics").status_code == 401 and client.get("/healthz").status_code == 200
        fired = []
        for start in range(0, len(rows), 100):
            answer = client.post("/v1/ingest", json={"items": rows[start:start + 100]}, headers=auth)
            assert answer.status_code == 200, answer.text
            fired += answer.json()["alerts"]
        assert {(a["rule"], a["topic"]) for a in fired} == {("negative-surge", "ACME"), ("mostly-negative", "ACME"),
                                                            ("negative-surge", "all")}
        again = client.post("/v1/ingest", json={"items": rows[:50]}, headers=auth).json()
        assert again["scored"] == 0 and again["duplicates"] == 50  # a repeated request is not counted twice
        bad = client.post("/v1/ingest", json={"items": [{"text": "x", "time": "soon"}]}, headers=auth)
        assert bad.status_code == 422 and "items[0]: time 'soon'" in bad.json()["detail"]
        assert client.post("/v1/ingest", json={"items": []}, headers=auth).status_code == 422
        metrics = client.get("/metrics", headers=auth).text
        assert f"tunesmith_monitor_texts_total {len(rows)}" in metrics
        assert "tunesmith_monitor_duplicates_total 50" in metrics and "tunesmith_monitor_expired_total 0" in metrics
        assert 'tunesmith_monitor_alerts_total{rule="negative-surge"} 2' in metrics
        assert 'tunesmith_monitor_topic_texts{topic="ACME"}' in metrics
        topics = {t["topic"]: t for t in client.get("/v1/topics", headers=auth).json()}
        assert topics["ACME"]["latest_window"]["negative"] >= 25 and topics["all"]["texts"] == len(rows)


def test_the_service_without_keys_answers_only_to_loopback(sentiment, tmp_path, capsys):
    pytest.importorskip("fastapi")
    with _service(sentiment, tmp_path, keys=()) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/metrics", headers={"Host": "evil.example"}).status_code == 400
    assert main(["monitor", "--sentiment", sentiment, "--serve", "--host", "0.0.0.0"]) == 2
    assert "needs API keys" in capsys.readouterr().err
    assert main(["monitor", "--sentiment", sentiment]) == 2
    assert "--source" in capsys.readouterr().err


def _store_answers(where: str) -> dict:
    """Every query the monitor makes, on a small hand-made history (times in hours)."""
    from tunesmith.monitor.store import Scored

    store = Store(where)
    with store.transaction():
        # 0.7 h falls in window 0: a window number rounded instead of floored would put it in hour 1.
        store.add([Scored("a", 0.7 * HOUR, "awful", "negative", True, -0.8, ["X", "all"]),
                   Scored("b", 1.2 * HOUR, "fine", "neutral", False, 0.1, ["X", "all"]),
                   Scored("c", 1.9 * HOUR, "bad", "negative", True, -0.6, ["X", "all"]),
                   Scored("d", 5.5 * HOUR, "good", "positive", False, 0.9, ["Y", "all"])])
        store.add([Scored("a", 0.7 * HOUR, "awful", "negative", True, -0.8, ["X"])])  # again: not counted twice
        store.add_alert({"rule": "r", "topic": "X", "window_start": HOUR, "window_end": 2 * HOUR, "why": "w",
                         "facts": {"n": 2}, "evidence": [{"id": "c", "text": "bad"}]})
    with store.transaction():
        store.set_position("s.jsonl", store.position("s.jsonl").__class__(120, 3))
        store.set_position("s.jsonl", store.position("s.jsonl").__class__(240, 6))  # an update, not a second row
    answers = {
        "series": [(start, stats.count, stats.negatives, round(stats.mean_score, 6)) for start, stats in
                   store.series("X", HOUR)],
        "window": store.window("X", HOUR, 2 * HOUR), "latest": store.latest_window("all", HOUR),
        "topics": store.topics(), "known": store.known(["a", "d", "zz"]), "newest": store.newest_time(),
        "first": store.first_time("Y"), "evidence": store.most_negative("X", 0, 2 * HOUR),
        "position": store.position("s.jsonl"), "alerted": store.alerted("r", "X", HOUR),
        "last_alert": store.last_alert("r", "X", 5 * HOUR),
        "alerts": [(a["rule"], a["facts"], a["evidence"], a["delivered"]) for a in store.alerts(undelivered_only=True)],
    }
    store.mark_delivered(store.alerts()[0]["id"])
    with store.transaction():
        answers["expired"] = store.expire(1.5 * HOUR)
    answers["after"] = (store.alerts(undelivered_only=True), store.topics())
    store.close()
    return answers


def test_the_store_gives_the_same_answers_on_sqlite_and_postgresql(tmp_path, postgres_database):
    from tunesmith.monitor.store import WindowStats
    from tunesmith.monitor.stream import Position

    on_sqlite, on_postgres = _store_answers(str(tmp_path / "m.db")), _store_answers(postgres_database())
    assert on_sqlite["series"] == [(0.0, 1, 1, -0.8), (HOUR, 2, 1, -0.25)]
    assert on_sqlite["window"] == WindowStats(2, 1, (0.1 - 0.6) / 2) and on_sqlite["latest"][0] == 5 * HOUR
    assert on_sqlite["topics"] == [("all", 4), ("X", 3), ("Y", 1)] and on_sqlite["known"] == {"a", "d"}
    assert on_sqlite["position"] == Position(240, 6) and on_sqlite["alerted"] and on_sqlite["last_alert"] == HOUR
    assert [e["id"] for e in on_sqlite["evidence"]] == ["a", "c"]  # most negative first
    assert on_sqlite["expired"] == 4 and on_sqlite["after"] == ([], [("all", 2), ("X", 1), ("Y", 1)])
    assert on_postgres == on_sqlite


def test_a_postgresql_store_that_cannot_be_reached_is_refused_without_its_password(tmp_path, postgres_server):
    url = postgres_server.replace("postgres@", "postgres:hunter2@").replace("host=", "host=/nonexistent")
    with pytest.raises(UserError) as refused:
        Store(url)
    assert "cannot connect" in str(refused.value) and "hunter2" not in str(refused.value)
    assert "postgres:***@" in str(refused.value)


def test_kill_9_in_the_middle_of_a_batch_then_a_restart_loses_and_repeats_nothing(sentiment, tmp_path):
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    rows = [dict(r, id=f"{r['id']}-{copy}") for copy in range(6) for r in stream_rows(copy)]  # ~2,300 texts
    source = write_jsonl(tmp_path / "s.jsonl", rows)
    store = tmp_path / "m.db"
    command = ["monitor", "--sentiment", sentiment, "--source", source, "--store", str(store), "--topics-from",
               "ticker", "--batch", "16", "--retain", "forever"]
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", *command], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def stored() -> int:
        try:
            with sqlite3.connect(store) as db:
                return db.execute("SELECT COUNT(DISTINCT id) FROM items").fetchone()[0]
        except sqlite3.Error:
            return 0

    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and stored() < 100:
        time.sleep(0.02)
    assert proc.poll() is None, "the monitor finished before it could be killed; give it more rows"
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: between or inside a batch's transaction
    proc.wait()
    killed_at = stored()
    assert 0 < killed_at < len(rows)
    assert main(command) == 0  # the same command continues after the last committed line
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(DISTINCT id) FROM items").fetchone()[0] == len(rows)  # nothing lost
        per_topic = dict(db.execute("SELECT topic, COUNT(*) FROM items GROUP BY topic").fetchall())
        assert per_topic["all"] == len(rows)  # nothing counted twice
        alerts = db.execute("SELECT rule, topic, window_start FROM alerts").fetchall()
    assert len(alerts) == len(set(alerts))


def test_soak_a_mixed_stream_while_the_webhook_is_down_then_up(sentiment, tmp_path, monkeypatch, receiver):
    """The service fed valid, repeated, malformed, far-future, oversized and topic-spamming
    requests while its webhook receiver is down, then up: every valid text is stored once and
    every alert reaches the receiver once (docs/benchmarks.md, "Long-running services")."""
    import tunesmith.monitor.deliver as deliver

    monkeypatch.setattr(deliver, "BACKOFF_S", 0.05)
    monkeypatch.setattr(deliver, "MAX_BACKOFF_S", 0.2)
    monkeypatch.setenv("TUNESMITH_WEBHOOK_SECRET", "s3cret")
    hour = 3600.0
    shift = (time.time() // hour - 10) * hour - START  # the fixture's nine hours, ending about an hour ago
    valid = [{**r, "time": r["time"] + shift} for r in stream_rows()]
    faults = {"repeated": 0, "malformed": 0, "future": 0, "oversized": 0, "topic_spam": 0}
    statuses: list[int] = []
    Receiver.failures_left = 10**6  # down
    with _live_service(sentiment, tmp_path / "soak.db", webhook=receiver, max_topics=20) as (client, auth):
        def send(items) -> int:
            code = client.post("/v1/ingest", json={"items": items}, headers=auth).status_code
            statuses.append(code)
            return code

        for start in range(0, len(valid), 40):
            batch = valid[start:start + 40]
            assert send(batch + valid[max(0, start - 5):start]) == 200  # five repeats of the last batch
            faults["repeated"] += min(5, start)
            assert send([{"text": "x", "time": "not a time"}]) == 422
            assert send([{**batch[0], "id": f"future-{start}", "time": "2999-01-01T00:00:00Z"}]) == 422
            faults["malformed"] += 1
            faults["future"] += 1
            if start % 160 == 0:
                assert send([{"text": "x"}] * 1001) == 422  # over the batch limit
                faults["oversized"] += 1
                spam = [{"id": f"spam-{start}-{k}", "time": time.time(), "ticker": f"RANDOM{start}-{k}", "text": "ok"}
                        for k in range(30)]
                assert send(spam) == 200
                faults["topic_spam"] += 30
            if start >= len(valid) // 2:
                Receiver.failures_left = 0  # the receiver comes back halfway through
        spam_texts = faults["topic_spam"]
        store = client.app.state.monitor.pipeline.store
        deliverer = client.app.state.monitor.pipeline.deliverer
        deliverer.flush(10.0)
        with client.app.state.monitor.pipeline.lock:
            stored = store.db.execute("SELECT COUNT(DISTINCT id) FROM items").fetchone()[0]
            alerts = store.alerts()
    assert stored == len(valid) + spam_texts  # every valid text once; none of the refused ones
    ids = [int(headers["X-Tunesmith-Alert-Id"]) for headers, _ in Receiver.received]
    assert alerts and sorted(ids) == sorted(a["id"] for a in alerts)  # every alert delivered, once
    assert all(a["delivered"] for a in alerts)
    assert statuses.count(500) == 0
    print(f"soak: {len(statuses)} requests, faults {faults}, {stored} texts stored, {len(alerts)} alerts delivered "
          f"once each, items lost 0")


def test_the_webhook_url_is_parsed_not_prefix_matched(monkeypatch):
    from tunesmith.monitor.sinks import Sinks

    monkeypatch.setenv("TUNESMITH_WEBHOOK_SECRET", "s3cret")
    for bad in ("http://localhost@evil.example/", "http://127.0.0.1.evil.example/", "http://evil.example/",
                "https://user:pw@hooks.example/", "ftp://hooks.example/"):
        with pytest.raises(UserError, match="--webhook"):
            Sinks(print, webhook=bad)
    for good in ("https://hooks.example/alerts", "http://127.0.0.1:9000/hook", "http://localhost/hook"):
        assert Sinks(print, webhook=good).webhook == good


def test_a_followed_file_emptied_in_place_is_read_again_from_its_start(tmp_path):
    """logrotate's copytruncate empties the file under the same name: the offset kept is past
    its end, and the follower read nothing from then on."""
    from tunesmith.commands.monitor import _Reader

    store = Store(tmp_path / "m.db")
    path = tmp_path / "live.jsonl"
    rows = stream_rows()
    write_jsonl(path, rows[:30])
    lines = []
    reader = _Reader(str(path), store, None, growing=True, log=lines.append)
    items, positions, _ = reader.next(100)
    store.set_position(*next(iter(positions.items())))
    write_jsonl(path, rows[30:35])  # rotated: five new lines in a now shorter file
    items, positions, _ = reader.next(100)
    assert [i.text for i in items] == [r["text"] for r in rows[30:35]] and "rotated in place" in lines[0]
    store.close()

