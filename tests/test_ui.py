"""`tunesmith ui`'s API in-process (FastAPI's TestClient): the runs table, a run's details, live
history as server-sent events, the most confident wrong predictions, try it, starting,
cancelling and resuming training, and the security defaults. The pages themselves are tested in
a real browser in test_ui_browser.py."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_rows, train_args, write_csv
from tunesmith.errors import UserError


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory, tiny_model):
    from tunesmith.cli import main

    base = tmp_path_factory.mktemp("ui")
    (base / "runs").mkdir()
    data = write_csv(base / "runs" / "toy.csv", make_rows(30))  # inside the runs folder: allowed for new runs
    assert main(train_args(data, tiny_model, base / "runs", "first", "--epochs", "3", "--eval-every", "4")) == 0
    return base / "runs"


def client_for(root, keys=None, **kwargs):
    from fastapi.testclient import TestClient

    from tunesmith.serve.security import KeyRing
    from tunesmith.ui.service import create_app

    return TestClient(create_app(root, KeyRing(keys or []), **kwargs), base_url="http://127.0.0.1")


def test_runs_table_and_a_runs_details(runs_folder):
    client = client_for(runs_folder)
    rows = client.get("/api/runs").json()["runs"]
    metrics = json.loads((runs_folder / "first" / "metrics.json").read_text())
    (row,) = [r for r in rows if r["id"] == "first"]
    assert row["status"] == "finished" and row["split"] == "test"
    assert row["value"] == pytest.approx(metrics["test"]["macro_f1"])
    assert row["trainable_pct"] == pytest.approx(metrics["parameters"]["trainable_pct"])

    run = client.get("/api/run", params={"id": "first"}).json()
    assert run["labels"] == json.loads((runs_folder / "first" / "labels.json").read_text())
    assert len(run["history"]) == len((runs_folder / "first" / "history.jsonl").read_text().splitlines())
    assert run["test"]["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    assert client.get("/api/run", params={"id": "../first"}).status_code == 404  # nothing outside the folder
    assert client.get("/api/run", params={"id": "nope"}).status_code == 404
    assert client.get("/api/run/report", params={"id": "first"}).text.startswith("<!")
    for page in ("/", "/run?id=first", "/compare?ids=first", "/static/app.js"):
        assert client.get(page).status_code == 200


def test_history_streams_as_server_sent_events_then_ends(runs_folder):
    client = client_for(runs_folder)
    with client.stream("GET", "/api/run/events", params={"id": "first"}) as answer:
        body = "".join(answer.iter_text())
    events = [block for block in body.split("\n\n") if block.strip()]
    rows = [json.loads(e[len("data: "):]) for e in events if e.startswith("data: ")]
    history = [json.loads(line) for line in (runs_folder / "first" / "history.jsonl").read_text().splitlines()]
    assert rows == history
    assert events[-1].startswith("event: end") and '"finished"' in events[-1]


def test_most_confident_wrong_predictions_are_the_test_splits(runs_folder):
    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    client = client_for(runs_folder)
    found = client.get("/api/run/errors", params={"id": "first"}).json()
    run = Run(runs_folder / "first")
    test = run.split("test")
    predictor = Predictor.from_run(run)
    probs = np.asarray(predictor.predict(test.texts))
    wrong = [i for i, p in enumerate(probs.argmax(axis=1)) if predictor.labels[p] != test.labels[i]]
    assert found["available"] and found["wrong"] == len(wrong) and found["scored"] == len(test.texts)
    confidences = [r["confidence"] for r in found["rows"]]
    assert confidences == sorted(confidences, reverse=True)
    assert all(r["label"] != r["predicted"] for r in found["rows"])
    if wrong:
        top = max(wrong, key=lambda i: probs[i].max())
        assert found["rows"][0]["text"] == test.texts[top]


def test_try_it_answers_as_serve_does(runs_folder):
    client = client_for(runs_folder)
    labels = json.loads((runs_folder / "first" / "labels.json").read_text())
    answer = client.post("/api/run/predict", json={"id": "first", "text": "great wonderful"}).json()
    assert answer["label"] in labels and set(answer["scores"]) <= set(labels)
    assert client.post("/api/run/predict", json={"id": "first", "text": ""}).status_code == 422


def test_security_defaults(runs_folder):
    open_client = client_for(runs_folder)
    assert open_client.get("/api/runs", headers={"host": "evil.example"}).status_code in (400, 403)
    refused = open_client.post("/api/run/predict", json={"id": "first", "text": "x"},
                               headers={"origin": "http://evil.example"})
    assert refused.status_code == 403  # another site's page cannot use the dashboard
    # A page can POST a body with no Content-Type without a preflight: it is not read as JSON.
    blob = open_client.post("/api/run/predict", content=b'{"id": "first", "text": "x"}')
    assert blob.status_code == 422

    keyed = client_for(runs_folder, ["secret-key-1"], host="0.0.0.0")
    assert keyed.get("/api/runs").status_code == 401
    assert keyed.get("/api/runs", headers={"authorization": "Bearer secret-key-1"}).status_code == 200
    assert keyed.get("/healthz").status_code == 200
    assert keyed.post("/api/login", json={"key": "wrong"}).status_code == 401
    assert keyed.post("/api/login", json={"key": "secret-key-1"}).status_code == 200
    assert keyed.get("/api/runs").status_code == 200  # the sign-in cookie
    cookie = keyed.cookies.get("tunesmith_session")
    assert cookie and "secret-key-1" not in cookie  # a session token, never the key itself
    keyed.cookies.clear()
    keyed.cookies.set("tunesmith_session", "made-up-token")
    assert keyed.get("/api/runs").status_code == 401
    assert keyed.get("/openapi.json").status_code == 404  # no schema pages to probe


def test_failed_sign_ins_are_limited_per_address(runs_folder, monkeypatch):
    from fastapi.testclient import TestClient

    from tunesmith.serve.keyed import keys_from_env
    from tunesmith.ui.service import create_app

    monkeypatch.setenv("TUNESMITH_API_KEYS", "k" * 20)
    keyed = TestClient(create_app(runs_folder, keys_from_env(), host="0.0.0.0"), base_url="http://127.0.0.1")
    codes = [keyed.post("/api/login", json={"key": f"guess-{k}"}).status_code for k in range(14)]
    assert codes[:10] == [401] * 10 and 429 in codes[10:]  # a burst of 10, then one a second
    assert keyed.get("/api/runs", headers={"authorization": "Bearer " + "k" * 20}).status_code == 200


def test_a_short_key_is_refused_for_every_service(monkeypatch):
    from tunesmith.errors import UserError
    from tunesmith.serve.keyed import keys_from_env

    monkeypatch.setenv("TUNESMITH_API_KEYS", "short-key")
    with pytest.raises(UserError, match="at least 16 characters"):
        keys_from_env()


def test_a_run_folder_from_someone_else_cannot_reach_outside_it_or_script_the_dashboard(runs_folder, tmp_path):
    """A run folder may come from someone else. Its files may be symbolic links (history.jsonl ->
    /etc/passwd was streamed over /api/run/events), and its report.html may hold script, which
    served from the dashboard's origin would run with the sign-in cookie."""
    import shutil

    hostile = runs_folder / "hostile"
    shutil.copytree(runs_folder / "first", hostile)
    secret = tmp_path / "secret.txt"
    secret.write_text('{"step": 1, "loss": 0.5, "secret": "do not show"}\n')
    (hostile / "history.jsonl").unlink()
    (hostile / "history.jsonl").symlink_to(secret)
    (hostile / "report.html").write_text("<script>fetch('/api/jobs', {method: 'POST'})</script>")
    (runs_folder / "linked").symlink_to(runs_folder / "first")  # a symlinked run folder
    client = client_for(runs_folder)
    runs = client.get("/api/runs")
    assert runs.status_code == 200 and "linked" not in {r["id"] for r in runs.json()["runs"]}
    assert client.get("/api/run", params={"id": "linked"}).status_code == 404
    page = client.get("/api/run", params={"id": "hostile"}).json()
    assert page["history"] == []
    with client.stream("GET", "/api/run/events", params={"id": "hostile"}) as events:
        assert "do not show" not in "".join(events.iter_text())
    report = client.get("/api/run/report", params={"id": "hostile"})
    assert report.headers["content-security-policy"].startswith("sandbox")
    assert "script-src 'self'" in client.get("/").headers["content-security-policy"]
    shutil.rmtree(hostile)
    (runs_folder / "linked").unlink()


def test_new_runs_read_allowed_data_only(runs_folder, tmp_path):
    client = client_for(runs_folder)
    outside = write_csv(tmp_path / "outside.csv", make_rows(10))
    choices = client.get("/api/choices").json()
    values = [d["value"] for d in choices["data"]]
    assert str(runs_folder / "toy.csv") in values and "tweets-sentiment" in values
    assert not any("first" in v for v in values)  # a run's own splits are not offered
    answer = client.post("/api/jobs", json={"data": outside, "name": "x"})
    assert answer.status_code == 422 and "choose a file under" in answer.json()["detail"]
    answer = client.post("/api/jobs", json={"data": str(runs_folder / "toy.csv"), "name": "../escape"})
    assert answer.status_code == 422
    answer = client.post("/api/jobs", json={"data": str(runs_folder / "toy.csv"), "name": "first"})
    assert answer.status_code == 422 and "exists" in answer.json()["detail"]


def test_jobs_queue_beyond_one_confine_the_model_and_get_no_secrets(runs_folder, tmp_path, monkeypatch):
    """Each POST used to start a trainer at once, with any Hub id or folder as its model and the
    dashboard's whole environment (API keys, the webhook secret)."""
    from tunesmith.ui import jobs as jobs_module

    started = []

    class Trainer:  # stands in for the subprocess: running until told to stop
        def __init__(self, args, env, **_):
            self.args, self.env, self.code = args, env, None
            started.append(self)

        def poll(self):
            return self.code

    monkeypatch.setattr(jobs_module.subprocess, "Popen", Trainer)
    monkeypatch.setenv("TUNESMITH_API_KEYS", "k" * 20)
    monkeypatch.setenv("TUNESMITH_WEBHOOK_SECRET", "hush")
    jobs = jobs_module.Jobs(runs_folder, [])
    data = str(runs_folder / "toy.csv")
    first = jobs.start(data, "text-classification", "lora", "one", {})
    second = jobs.start(data, "text-classification", "lora", "two", {})
    assert (first.state(), second.state(), len(started)) == ("running", "queued", 1)
    assert "TUNESMITH_API_KEYS" not in started[0].env and "TUNESMITH_WEBHOOK_SECRET" not in started[0].env
    assert "PATH" in started[0].env
    started[0].code = 0  # the first finishes: the queued one starts
    jobs.start_queued()
    assert second.state() == "running" and len(started) == 2
    for model in ("someone/huge-model", str(tmp_path)):
        with pytest.raises(UserError, match="choose a built-in model"):
            jobs.start(data, "text-classification", "lora", "three", {"model": model})
    assert jobs.start(data, "text-classification", "lora", "three", {"model": "minilm"}).state() == "queued"
    with pytest.raises(UserError, match="letters, digits"):
        jobs.start(data, "text-classification", "lora", "bad\n", {})  # a trailing newline is not a name
    jobs._closing = True


def _wait(predicate, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def test_a_cancel_the_process_does_not_act_on_still_ends_the_job(tmp_path, monkeypatch):
    """SIGINT normally stops a run between steps; a process stuck where the signal cannot reach is
    killed after the grace period, so a cancelled job never stays "running"."""
    import subprocess
    import sys

    from tunesmith.ui import jobs as jobs_module

    monkeypatch.setattr(jobs_module, "STOP_GRACE", 1.0)
    jobs = jobs_module.Jobs(tmp_path, [])
    deaf = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                             "signal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(120)"],
                            stdout=subprocess.PIPE, text=True)
    assert deaf.stdout.readline().strip() == "ready"  # its SIGINT handler is set before the cancel
    jobs.jobs[1] = jobs_module.Job(1, "deaf", [], deaf, tmp_path / "deaf.log")
    assert jobs.cancel(1).state() == "running"  # SIGINT alone does nothing to it
    assert _wait(lambda: jobs.get(1).state() != "running", 30)
    assert jobs.get(1).state() == "cancelled" and deaf.returncode == -9


def test_cancel_keeps_a_resumable_run_and_resume_finishes_it(runs_folder, tiny_model):
    from tunesmith.runs import Run, status

    client = client_for(runs_folder, data_dirs=[Path(tiny_model).parent])  # the model's folder is allowed
    settings = {"data": str(runs_folder / "toy.csv"), "name": "cancelled", "model": tiny_model, "method": "full",
                "epochs": 100, "batch_size": 1, "max_length": 16}  # a minute or more: the cancel lands well before the end
    job = client.post("/api/jobs", json=settings).json()
    assert "id" in job, job
    run = Run(runs_folder / "cancelled")
    # Cancel once it has a checkpoint to keep (the first evaluation writes one).
    assert _wait(lambda: (run.checkpoints / "last").is_dir()), client.get("/api/jobs").json()
    client.post(f"/api/jobs/{job['id']}/cancel")
    assert _wait(lambda: client.get("/api/jobs").json()[0]["state"] != "running"), client.get("/api/jobs").json()
    assert client.get("/api/jobs").json()[0]["state"] == "cancelled"
    assert status(run) == "interrupted"
    (row,) = [r for r in client.get("/api/runs").json()["runs"] if r["id"] == "cancelled"]
    assert row["status"] == "interrupted"
    assert client.post("/api/run/resume", json={"id": "first"}).status_code == 409  # finished: nothing to resume

    # Resume it with fewer steps left: shorten the run by editing nothing but its epochs.
    import yaml

    config = yaml.safe_load(run.config_file.read_text())
    config["epochs"] = 2.0
    run.config_file.write_text(yaml.safe_dump(config))
    resumed = client.post("/api/run/resume", json={"id": "cancelled"}).json()
    assert _wait(lambda: client.get("/api/jobs").json()[-1]["state"] != "running", 180)
    jobs = {j["id"]: j for j in client.get("/api/jobs").json()}
    assert jobs[resumed["id"]]["state"] == "finished", jobs[resumed["id"]]["log"]
    assert status(run) == "finished"


def test_no_input_to_the_dashboard_causes_a_server_error(runs_folder, monkeypatch):
    """Fuzzed from its own OpenAPI schema (schemathesis), as `serve` is: no 5xx. Trainer
    processes are stood in for: a fuzzed body that names a valid run must not start one."""
    schemathesis = pytest.importorskip("schemathesis")
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tunesmith.serve.security import KeyRing
    from tunesmith.ui import jobs as jobs_module
    from tunesmith.ui.service import create_app

    class Trainer:
        def __init__(self, *args, **kwargs):
            pass

        def poll(self):
            return 0

    monkeypatch.setattr(jobs_module.subprocess, "Popen", Trainer)
    key = "dashboard-fuzz-key-0123456789"
    app = create_app(runs_folder, KeyRing([key]), host="0.0.0.0")
    operations = [r.ok() for r in schemathesis.openapi.from_dict(app.openapi()).get_all_operations()]
    assert {"/api/runs", "/api/run", "/api/jobs", "/api/login"} <= {op.path for op in operations}
    seen = set()

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data, client):
        case = data.draw(data.draw(st.sampled_from(operations)).as_strategy())
        if isinstance(case.query, dict) and "id" in case.query and data.draw(st.booleans()):
            case.query["id"] = "first"  # half the time, a run that exists
        for headers in ({"Authorization": f"Bearer {key}"}, {}):
            response = client.request(**case.as_transport_kwargs(base_url="http://127.0.0.1", headers=headers))
            seen.add(response.status_code)
            assert response.status_code < 500, (case.path, case.body, response.status_code, response.text[:200])

    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        fuzz(client=client)
    assert {200, 401, 422} <= seen, seen
