"""The HTTP API, in-process: auth, every limit, output shapes, metrics, masking, draining."""

import asyncio
import io
import json
import logging
import random
import time

import numpy as np
import pytest

from conftest import train_tiny_run
from tunesmith.cli import main
from tunesmith.errors import UserError

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tunesmith.inference import Predictor  # noqa: E402
from tunesmith.runs import Run  # noqa: E402
from tunesmith.serve.app import create_app  # noqa: E402
from tunesmith.serve.batcher import MicroBatcher  # noqa: E402
from tunesmith.serve.security import KeyRing, RateLimiter, mask_pii  # noqa: E402
from tunesmith.serve.server import check_settings, run_info  # noqa: E402
from tunesmith.serve.settings import ServeSettings  # noqa: E402

KEY = "k" * 20 + "-secret"
OTHER = "o" * 20 + "-secret"


@pytest.fixture(scope="module")
def run_path(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("serve")
    return train_tiny_run(base, tiny_model, "full", "2", 30)


@pytest.fixture(scope="module")
def predictor(run_path):
    return Predictor.from_run(Run(run_path))


def make_client(run_path, predictor, keys=(KEY,), **overrides) -> TestClient:
    settings = ServeSettings(run=str(run_path), **overrides)
    return TestClient(create_app(predictor, settings, KeyRing(list(keys)), run_info(Run(run_path))))


AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def served_log():
    """The JSON lines the server logs ("tunesmith.serve" does not propagate: it has its own
    stderr handler, made once per process), collected as they are written."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("tunesmith.serve")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_auth(run_path, predictor):
    with make_client(run_path, predictor) as client:
        missing = client.post("/v1/predict", json={"inputs": "good"})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "missing API key" in missing.json()["error"]
        assert client.post("/v1/predict", json={"inputs": "good"}, headers={"Authorization": "Bearer wrong-key-123456789"}).status_code == 401
        assert client.post("/v1/predict", json={"inputs": "good"}, headers=AUTH).status_code == 200
        assert client.post("/v1/predict", json={"inputs": "good"}, headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/v1/model").status_code == 401
        assert client.get("/metrics").status_code == 401
        # Probes stay open: they reveal nothing about the model or data. The schema needs the key.
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/openapi.json", headers=AUTH).json()["info"]["title"] == "tunesmith"


def test_several_keys_each_work(run_path, predictor):
    with make_client(run_path, predictor, keys=(KEY, OTHER)) as client:
        for key in (KEY, OTHER):
            assert client.post("/v1/predict", json={"inputs": "x"}, headers={"X-API-Key": key}).status_code == 200


def test_output_shapes(run_path, predictor):
    labels = Run(run_path).labels()
    with make_client(run_path, predictor) as client:
        one = client.post("/v1/predict", json={"inputs": "good happy film"}, headers=AUTH).json()
        assert len(one) == 1 and set(one[0]) == {"label", "score", "scores"}
        assert set(one[0]["scores"]) == set(labels) and abs(sum(one[0]["scores"].values()) - 1) < 1e-4
        assert one[0]["score"] == max(one[0]["scores"].values())
        texts = ["good happy film", "awful sad plot", "okay plain story"]
        many = client.post("/v1/predict", json={"inputs": texts}, headers=AUTH).json()
        expected = predictor.predict(texts)  # the same numbers `tunesmith predict` writes
        assert [m["label"] for m in many] == [labels[i] for i in expected.argmax(1)]
        assert np.allclose([m["score"] for m in many], expected.max(1), atol=1e-5)
        top = client.post("/v1/predict", json={"inputs": "x", "parameters": {"top_k": 1}}, headers=AUTH).json()
        assert len(top[0]["scores"]) == 1
        info = client.get("/v1/model", headers=AUTH).json()
        assert info["task"] == "text-classification" and info["labels"] == labels
        assert "accuracy" in info["metrics"]["test"]


def test_limits(run_path, predictor):
    with make_client(run_path, predictor, max_body_bytes=2000, max_inputs=3, max_text_chars=50) as client:
        big = client.post("/v1/predict", content=json.dumps({"inputs": "x" * 3000}), headers={**AUTH, "content-type": "application/json"})
        assert big.status_code == 413 and "2000 bytes" in big.json()["error"]

        def chunks():  # no Content-Length: the limit must still hold
            yield b'{"inputs": "'
            yield b"x" * 3000
            yield b'"}'

        chunked = client.post("/v1/predict", content=chunks(), headers={**AUTH, "content-type": "application/json"})
        assert chunked.status_code == 413
        many = client.post("/v1/predict", json={"inputs": ["a"] * 4}, headers=AUTH)
        assert many.status_code == 422 and many.json()["field"] == "inputs" and "limit is 3" in many.json()["error"]
        long = client.post("/v1/predict", json={"inputs": ["ok", "y" * 51]}, headers=AUTH)
        assert long.status_code == 422 and long.json()["field"] == "inputs[1]" and "limit is 50" in long.json()["error"]
        bad = client.post("/v1/predict", json={"text": "wrong field"}, headers=AUTH)
        assert bad.status_code == 422 and bad.json()["field"] == "inputs"
        assert client.post("/v1/predict", json={"inputs": []}, headers=AUTH).status_code == 422


def test_rate_limit_per_key(run_path, predictor):
    with make_client(run_path, predictor, keys=(KEY, OTHER), rate_limit=0.5, rate_burst=2) as client:
        codes = [client.post("/v1/predict", json={"inputs": "x"}, headers=AUTH).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = client.post("/v1/predict", json={"inputs": "x"}, headers=AUTH)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # Another key has its own bucket.
        assert client.post("/v1/predict", json={"inputs": "x"}, headers={"X-API-Key": OTHER}).status_code == 200


def test_rate_limiter_refills():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=1, clock=lambda: now[0])
    assert limiter.check("a") == 0.0
    assert limiter.check("a") == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.check("a") == 0.0


def test_metrics_move(run_path, predictor):
    with make_client(run_path, predictor) as client:
        for _ in range(3):
            client.post("/v1/predict", json={"inputs": ["a", "b"]}, headers=AUTH)
        client.post("/v1/predict", json={"inputs": "a"})  # 401
        text = client.get("/metrics", headers=AUTH).text
    assert 'tunesmith_requests_total{route="/v1/predict",status="200"} 3' in text
    assert 'tunesmith_requests_total{route="/v1/predict",status="401"} 1' in text
    assert 'tunesmith_request_duration_seconds_count{route="/v1/predict"} 4' in text
    assert "tunesmith_batch_size_count 4" in text  # 3 requests + the warm-up
    assert "tunesmith_queue_depth 0" in text
    assert 'tunesmith_model_info{backend="torch"' in text


def test_draining_returns_503(run_path, predictor):
    with make_client(run_path, predictor) as client:
        client.app.state.draining = True
        assert client.post("/v1/predict", json={"inputs": "x"}, headers=AUTH).status_code == 503
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200  # alive, just not taking work


def test_a_failing_batch_does_not_take_the_server_down(run_path, predictor):
    class Flaky:
        labels = predictor.labels

        def predict(self, texts, batch_size=32):
            if "boom" in texts:
                raise RuntimeError("inference failed")
            return predictor.predict(texts, batch_size)

    settings = ServeSettings(run=str(run_path))
    app = create_app(Flaky(), settings, KeyRing([KEY]), run_info(Run(run_path)))
    with TestClient(app, raise_server_exceptions=False) as client:
        failed = client.post("/v1/predict", json={"inputs": "boom"}, headers=AUTH)
        assert failed.status_code == 500 and failed.json() == {"error": "internal error"}
        assert client.post("/v1/predict", json={"inputs": "fine"}, headers=AUTH).status_code == 200


def test_logs_never_hold_raw_text_by_default(run_path, predictor):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tunesmith.serve")
    logger.addHandler(handler)
    try:
        secret = "mail jane.doe@example.com about card 4111 1111 1111 1111"
        with make_client(run_path, predictor) as client:
            client.post("/v1/predict", json={"inputs": secret}, headers=AUTH)
        assert "jane.doe" not in stream.getvalue() and "4111" not in stream.getvalue()
        assert '"event": "request"' in stream.getvalue()
        with make_client(run_path, predictor, log_text=True) as client:
            client.post("/v1/predict", json={"inputs": secret}, headers=AUTH)
        logged = stream.getvalue()
        assert "[EMAIL]" in logged and "[CARD]" in logged and "jane.doe" not in logged and "4111" not in logged
        assert KEY not in logged
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("text,masked", [
    ("write to ana.b+x@mail.co.uk today", "write to [EMAIL] today"),
    ("card 4111-1111-1111-1111 expired", "card [CARD] expired"),
    ("call +44 20 7946 0958 now", "call [PHONE] now"),
    ("call (555) 123-4567", "call [PHONE]"),
    ("ssn 123-45-6789 on file", "ssn [ID] on file"),
    ("iban GB82 WEST 1234 5698 7654 32 please", "iban [ID] please"),
])
def test_mask_each_pii_kind(text, masked):
    assert mask_pii(text) == masked


def test_masking_costs_the_same_per_character_on_hostile_text():
    """The e-mail pattern tried at every start of one long word was quadratic: 0.56 s for a
    10,000-character text, which 64 requests turned into ~35 s of a frozen event loop. Bounded
    patterns scan a fixed stretch from each start: a 200,000-character word (20x the largest
    text a server takes) is masked in well under a second; the old pattern took minutes."""
    import time

    for hostile in ("a" * 200_000, "a." * 100_000 + "@", "1-" * 100_000):
        started = time.perf_counter()
        mask_pii(hostile)
        assert time.perf_counter() - started < 1.0
    assert mask_pii("x" * 70 + "@mail.example.com") == "x" * 6 + "[EMAIL]"  # the 64 before the @ are masked


def test_masking_leaves_ordinary_text_and_non_card_numbers():
    assert mask_pii("order 12 of 2024, 3 items") == "order 12 of 2024, 3 items"
    assert "[CARD]" not in mask_pii("ref 1234 5678 9012 3456")  # fails the Luhn check


def test_micro_batcher_groups_concurrent_requests():
    seen = []

    def predict(texts):
        seen.append(len(texts))
        return np.tile(np.array([[0.25, 0.75]]), (len(texts), 1))

    async def scenario():
        batcher = MicroBatcher(predict, max_size=16, max_wait_ms=50)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(10)))
        big = await batcher.submit([f"u{i}" for i in range(20)])  # larger than max_size: runs alone
        await batcher.stop()
        return results, big

    results, big = asyncio.run(scenario())
    assert seen[0] == 10 and len(results) == 10 and all(r.shape == (1, 2) for r in results)
    assert big.shape == (20, 2) and seen[-1] == 20


def test_queued_requests_join_without_waiting():
    """With max_wait 0, requests already queued when a batch starts still join it."""
    seen = []

    def predict(texts):
        seen.append(len(texts))
        return np.zeros((len(texts), 2))

    async def scenario():
        batcher = MicroBatcher(predict, max_size=16, max_wait_ms=0)
        batcher.start()  # the worker task runs only once the submissions below are queued
        await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(6)))
        await batcher.stop()

    asyncio.run(scenario())
    assert seen == [6]


def test_server_runs_a_micro_batch_in_slices_of_forward_batch_size(run_path, predictor, monkeypatch):
    calls = []
    original = type(predictor).predict

    def spy(self, inputs, batch_size=32):
        calls.append((len(inputs), batch_size))
        return original(self, inputs, batch_size)

    monkeypatch.setattr(type(predictor), "predict", spy)
    with make_client(run_path, predictor, forward_batch_size=3) as client:
        assert client.post("/v1/predict", json={"inputs": ["good", "bad", "fine", "so good", "awful"]},
                           headers=AUTH).status_code == 200
    assert calls[-1] == (5, 3)


def test_start_checks(run_path, monkeypatch):
    monkeypatch.delenv("TUNESMITH_API_KEYS", raising=False)
    with pytest.raises(UserError, match="--host 0.0.0.0 is reachable from the network: set TUNESMITH_API_KEYS"):
        check_settings(ServeSettings(run=str(run_path), host="0.0.0.0"))
    check_settings(ServeSettings(run=str(run_path), host="0.0.0.0", no_auth=True))  # explicit opt-out works
    check_settings(ServeSettings(run=str(run_path), host="127.0.0.1"))  # loopback may go without keys
    monkeypatch.setenv("TUNESMITH_API_KEYS", f"{KEY}, {OTHER}")
    _, keys = check_settings(ServeSettings(run=str(run_path), host="0.0.0.0"))
    assert keys.identify(KEY) and keys.identify(OTHER) and not keys.identify("nope")
    with pytest.raises(UserError, match="--no-auth given but API keys are set"):
        check_settings(ServeSettings(run=str(run_path), host="0.0.0.0", no_auth=True))
    monkeypatch.setenv("TUNESMITH_API_KEYS", "short")
    with pytest.raises(UserError, match="at least 16 characters"):
        check_settings(ServeSettings(run=str(run_path)))
    monkeypatch.delenv("TUNESMITH_API_KEYS")
    with pytest.raises(UserError, match="no ONNX export"):
        check_settings(ServeSettings(run=str(run_path), backend="onnx"))


def test_keys_from_file(run_path, tmp_path, monkeypatch):
    monkeypatch.delenv("TUNESMITH_API_KEYS", raising=False)
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text(f"# production keys\n{KEY}\n")
    _, keys = check_settings(ServeSettings(run=str(run_path), host="0.0.0.0", api_keys_file=str(keyfile)))
    assert keys.identify(KEY)


def test_serve_cli_refuses_unsafe_start(run_path, capsys, monkeypatch):
    monkeypatch.delenv("TUNESMITH_API_KEYS", raising=False)
    assert main(["serve", str(run_path), "--host", "0.0.0.0"]) == 2
    assert "reachable from the network" in capsys.readouterr().err


def test_chunked_body_under_the_limit_is_served(run_path, predictor):
    def chunks():
        yield b'{"inputs": '
        yield b'"good happy film"}'

    with make_client(run_path, predictor) as client:
        response = client.post("/v1/predict", content=chunks(), headers={**AUTH, "content-type": "application/json"})
        assert response.status_code == 200 and len(response.json()) == 1


class Poisoned:
    """A predictor whose tokenizer fails on one input, as a real one does on bad text."""

    labels = ["negative", "neutral", "positive"]

    def predict(self, inputs, batch_size=32):
        if "poison" in inputs:
            raise RuntimeError("cannot tokenize")
        return np.tile(np.array([[0.1, 0.2, 0.7]], dtype=np.float32), (len(inputs), 1))


def test_one_bad_input_fails_its_request_alone_not_its_batch():
    async def scenario():
        batcher = MicroBatcher(Poisoned().predict, max_size=16, max_wait_ms=50)
        batcher.start()
        try:
            results = await asyncio.gather(batcher.submit(["fine"]), batcher.submit(["poison"]),
                                           batcher.submit(["also fine", "x"]), return_exceptions=True)
        finally:
            await batcher.stop()
        return results

    first, poisoned, third = asyncio.run(scenario())
    assert isinstance(poisoned, RuntimeError)
    assert first.shape == (1, 3) and third.shape == (2, 3)


@pytest.mark.parametrize("text, says", [("bad \ud800 half", "lone surrogate at character 4"),
                                        ("nul\x00byte", "NUL character (at 3)")])
def test_text_that_no_tokenizer_reads_is_a_422_naming_the_input(run_path, predictor, text, says):
    with make_client(run_path, predictor) as client:
        # json.dumps escapes the surrogate as \ud800: valid JSON, as an attacker would send it
        answer = client.post("/v1/predict", content=json.dumps({"inputs": ["fine", text]}),
                             headers={**AUTH, "Content-Type": "application/json"})
        assert answer.status_code == 422 and answer.json()["field"] == "inputs[1]", answer.text
        assert says in answer.json()["error"]
        assert client.post("/v1/predict", json={"inputs": ["fine"]}, headers=AUTH).status_code == 200


def test_an_internal_error_is_one_log_line_without_a_traceback(run_path, caplog, served_log):
    settings = ServeSettings(run=str(run_path))
    app = create_app(Poisoned(), settings, KeyRing([KEY]), run_info(Run(run_path)))
    with caplog.at_level(logging.DEBUG), TestClient(app) as client:  # raise_server_exceptions on: nothing escapes
        failed = client.post("/v1/predict", json={"inputs": "poison"}, headers=AUTH)
    assert failed.status_code == 500 and failed.json() == {"error": "internal error"}
    everything = caplog.text + "\n".join(served_log)
    assert "Traceback" not in everything and "poison" not in everything
    errors = [json.loads(line) for line in served_log if json.loads(line)["event"] == "error"]
    assert [e["error"] for e in errors] == ["RuntimeError"]
    assert errors[0]["request_id"] == failed.headers["x-request-id"]  # the error line names its request


def test_the_rate_limit_table_stays_bounded_and_forgets_idle_clients_first():
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=2, clock=lambda: now[0], max_clients=3)
    limiter.check("busy")
    limiter.check("busy")  # "busy" has used its burst
    limiter.check("idle-1")
    now[0] = 5.0  # idle-1 has refilled, busy too by now; make busy busy again
    limiter.check("busy")
    limiter.check("busy")
    limiter.check("idle-2")
    limiter.check("newcomer")  # the table is full: idle buckets go, busy's is kept
    assert len(limiter._buckets) <= 3 and "busy" in limiter._buckets and "newcomer" in limiter._buckets
    assert limiter.check("busy") > 0  # its spent burst was not forgotten
    for i in range(100):
        limiter.check(f"spray-{i}")
    assert len(limiter._buckets) <= 3


def test_failed_key_attempts_are_rate_limited_per_address_but_a_valid_key_is_not(run_path, predictor):
    with make_client(run_path, predictor, auth_failures_per_s=0.01) as client:
        wrong = {"Authorization": "Bearer wrong-key-123456789"}
        codes = [client.post("/v1/predict", json={"inputs": "x"}, headers=wrong).status_code for _ in range(11)]
        assert codes == [401] * 10 + [429]
        assert client.post("/v1/predict", json={"inputs": "x"}, headers=AUTH).status_code == 200


def test_a_full_queue_refuses_with_503_instead_of_growing(run_path, predictor, monkeypatch):
    import time as clock

    def slow(inputs):
        clock.sleep(0.2)
        return np.zeros((len(inputs), 3), dtype=np.float32)

    async def scenario():
        batcher = MicroBatcher(slow, max_size=1, max_wait_ms=0, max_queue=2)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit([str(i)]) for i in range(6)), return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, Exception)]
    assert refused and all(type(r).__name__ == "Busy" for r in refused)
    assert sum(isinstance(r, np.ndarray) for r in results) >= 2  # the queued ones are answered

    from tunesmith.serve.batcher import Busy

    with make_client(run_path, predictor) as client:
        async def full(*_):
            raise Busy("1024 requests are waiting")

        monkeypatch.setattr(client.app.state.batcher, "submit", full)
        busy = client.post("/v1/predict", json={"inputs": "x"}, headers=AUTH)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]


def test_stop_strings_are_bounded_and_sampling_is_seeded_per_request():
    from pydantic import ValidationError

    from tunesmith.serve.schemas import STOP_CHARS, PredictParameters

    with pytest.raises(ValidationError):
        PredictParameters(stop=["x" * (STOP_CHARS + 1)])
    with pytest.raises(ValidationError):
        PredictParameters(stop=["a"] * 9)
    assert PredictParameters(seed=7).generation().seed == 7
    seeds = {PredictParameters(temperature=0.8).generation().seed for _ in range(5)}
    assert len(seeds) > 1  # not one fixed seed: sampled answers differ across requests


def test_every_request_has_an_id_echoed_and_logged(run_path, predictor, served_log):
    with make_client(run_path, predictor) as client:
        chosen = client.post("/v1/predict", json={"inputs": "fine"}, headers={**AUTH, "X-Request-ID": "abc-123"})
        made = client.post("/v1/predict", json={"inputs": "fine"}, headers=AUTH)
        unsafe = client.post("/v1/predict", json={"inputs": "fine"}, headers={**AUTH, "X-Request-ID": "a b\"c"})
    assert chosen.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 32 and made.headers["x-request-id"] != "abc-123"
    assert unsafe.headers["x-request-id"] != "a b\"c"  # not a plain token: replaced, never logged as sent
    requests = [line for line in map(json.loads, served_log) if line["event"] == "request"]
    assert [line["request_id"] for line in requests] == ["abc-123", made.headers["x-request-id"],
                                                          unsafe.headers["x-request-id"]]


def test_request_latency_is_measured_in_seconds(run_path, predictor):
    with make_client(run_path, predictor) as client:
        assert client.post("/v1/predict", json={"inputs": "fine"}, headers=AUTH).status_code == 200
        text = client.get("/metrics", headers=AUTH).text
    total = [line for line in text.splitlines()
             if line.startswith("tunesmith_request_duration_seconds_sum") and "/v1/predict" in line]
    assert total and 0 < float(total[0].split()[-1]) < 60, total


def test_a_keyless_loopback_server_answers_only_loopback_host_names(run_path, predictor):
    # DNS rebinding: a web page's own name resolves to 127.0.0.1, and the browser sends that name.
    with make_client(run_path, predictor, keys=()) as client:
        assert client.get("/v1/model", headers={"Host": "attacker.example"}).status_code == 400
        assert client.get("/v1/model").status_code == 400  # TestClient's own name, "testserver"
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            assert client.get("/v1/model", headers={"Host": host}).status_code == 200, host
    with make_client(run_path, predictor) as client:  # with keys, the key is the protection: any host
        assert client.get("/v1/model", headers={**AUTH, "Host": "api.example"}).status_code == 200
    with make_client(run_path, predictor, allowed_hosts=["*.example.com", "api.test"]) as client:
        assert client.get("/v1/model", headers={**AUTH, "Host": "a.example.com"}).status_code == 200
        assert client.get("/v1/model", headers={**AUTH, "Host": "api.test:443"}).status_code == 200
        refused = client.get("/v1/model", headers={**AUTH, "Host": "example.com.evil"})
        assert refused.status_code == 400 and refused.json()["field"] == "Host"


def test_forwarded_for_counts_only_from_trusted_proxies(run_path, predictor):
    def statuses(**trust):
        with make_client(run_path, predictor, keys=(), rate_limit=0.01, rate_burst=1, **trust) as client:
            return [client.get("/v1/model", headers={"Host": "localhost", "X-Forwarded-For": ip}).status_code
                    for ip in ("203.0.113.1", "203.0.113.2")]

    # Untrusted: both requests count against the proxy's own address, the second is limited.
    assert statuses() == [200, 429]
    # Trusted proxy ("testclient" is TestClient's address): each client has its own bucket.
    assert statuses(forwarded_allow_ips=["testclient"]) == [200, 200]


def test_keys_are_reloaded_when_the_file_changes_or_on_request(run_path, tmp_path, served_log):
    from tunesmith.serve.server import check_settings

    keyfile = tmp_path / "keys"
    keyfile.write_text(KEY + "\n")
    _, keys = check_settings(ServeSettings(run=str(run_path), api_keys_file=str(keyfile)))
    assert keys.identify(KEY) and not keys.identify(OTHER)
    keyfile.write_text(OTHER + "\n")  # rotate: the old key out, a new one in
    time.sleep(1.1)  # the file is looked at once a second at most
    assert keys.identify(OTHER) and not keys.identify(KEY)
    keyfile.write_text("short\n")  # a bad file keeps the keys that work, and says why
    assert not keys.reload() and keys.identify(OTHER)
    assert any("keys_reload_failed" in line and "16 characters" in line for line in served_log)
    keyfile.write_text(KEY + "\n")
    assert keys.reload() and keys.identify(KEY)  # what SIGHUP calls


def test_poison_requests_mixed_into_traffic_fail_alone(run_path, predictor):
    """Load test: normal clients and attackers at once, through the micro-batcher. Every
    normal request is answered; every poison request gets its own 4xx."""
    from concurrent.futures import ThreadPoolExecutor

    json_headers = {**AUTH, "Content-Type": "application/json"}
    poison = [
        dict(content=json.dumps({"inputs": ["fine", "bad \ud800"]}), headers=json_headers),
        dict(content=json.dumps({"inputs": "nul\x00"}), headers=json_headers),
        dict(content='{"inputs": ["unterminated', headers=json_headers),
        dict(json={"inputs": "x" * 300}, headers=AUTH),
        dict(json={"inputs": ["a"] * 9}, headers=AUTH),
        dict(json={"inputs": "ok", "parameters": {"max_new_tokens": 5}}, headers=AUTH),
        dict(json={"inputs": 5}, headers=AUTH),
        dict(content=b"\xff\xfe" * 100, headers=json_headers),
        dict(json={"inputs": "good"}, headers={"Authorization": "Bearer wrong-wrong-wrong-wrong"}),
        dict(content="x" * 5000, headers=json_headers),
    ]
    normal = [dict(json={"inputs": [f"good happy film {i}", "bad sad"]}, headers=AUTH) for i in range(40)]
    traffic = [("poison", p) for p in poison * 3] + [("normal", n) for n in normal]
    random.Random(0).shuffle(traffic)
    with make_client(run_path, predictor, max_inputs=8, max_text_chars=200, max_body_bytes=4000,
                     auth_failures_per_s=100.0) as client:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda item: (item[0], client.post("/v1/predict", **item[1])), traffic))
    normal_codes = [a.status_code for kind, a in answers if kind == "normal"]
    poison_codes = [a.status_code for kind, a in answers if kind == "poison"]
    assert normal_codes == [200] * 40
    assert all(len(a.json()) == 2 and "label" in a.json()[0] for kind, a in answers if kind == "normal")
    assert all(400 <= code < 500 for code in poison_codes), poison_codes


def test_no_service_believes_forwarded_addresses_it_was_not_told_to(monkeypatch):
    """uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: a local client
    could then choose the address its failed-key limit counts against."""
    import uvicorn

    from tunesmith.serve.keyed import run_server
    from tunesmith.serve.server import uvicorn_options
    from tunesmith.serve.settings import ServeSettings

    assert uvicorn_options(ServeSettings(run="r"))["proxy_headers"] is False
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options))
    run_server(object(), "127.0.0.1", 8090)  # the monitor, the assistant and the dashboard
    assert seen["proxy_headers"] is False

