"""`tunesmith monitor`: a stream scored per topic and window, alert rules, restart safety,
signed webhooks, and the report. The sentiment run is the tiny BERT trained on the toy cues."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
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

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.failures_left:
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
    import tunesmith.monitor.sinks as sinks

    monkeypatch.setattr(sinks, "BACKOFF_S", 0.01)
    source = write_jsonl(tmp_path / "s.jsonl", stream_rows())
    with pytest.raises(UserError, match="TUNESMITH_WEBHOOK_SECRET"):
        monitor(sentiment, source, str(tmp_path / "x.db"), webhook=receiver, log=lambda _: None)
    monkeypatch.setenv("TUNESMITH_WEBHOOK_SECRET", "s3cret")

    Receiver.failures_left = 10**6  # the receiver is down for the whole first run
    lines = []
    monitor(sentiment, source, str(tmp_path / "m.db"), topics_from="ticker", webhook=receiver, log=lines.append)
    assert not Receiver.received and any("attempt 3 of 3 failed (HTTP 503)" in line for line in lines)
    assert all(not a["delivered"] for a in Store(tmp_path / "m.db").alerts())

    Receiver.failures_left = 1  # back up, after one more failure: the retry delivers
    monitor(sentiment, source, str(tmp_path / "m.db"), topics_from="ticker", webhook=receiver, log=lambda _: None)
    assert len(Receiver.received) == 3  # the three stored alerts, each once
    for headers, body in Receiver.received:
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Tunesmith-Signature"] == expected
        assert json.loads(body)["id"] == int(headers["X-Tunesmith-Alert-Id"])
    assert all(a["delivered"] for a in Store(tmp_path / "m.db").alerts())


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
        monitor(sentiment, str(source), str(tmp_path / "m.db"), topics_from="ticker", follow=True, sleep=sleep,
                log=lines.append)
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

    pipeline = _pipeline(MonitorArgs(sentiment=sentiment, store=str(tmp_path / "m.db"), topics_from="ticker"),
                         lambda _: None)
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
