"""Fuzz the API from its own OpenAPI schema (schemathesis): no input may cause a 5xx."""

import pytest

schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import train_tiny_run  # noqa: E402
from tunesmith.cli import main  # noqa: E402
from tunesmith.inference import Predictor  # noqa: E402
from tunesmith.runs import Run  # noqa: E402
from tunesmith.serve.app import create_app  # noqa: E402
from tunesmith.serve.security import KeyRing  # noqa: E402
from tunesmith.serve.server import run_info  # noqa: E402
from tunesmith.serve.settings import ServeSettings  # noqa: E402

KEY = "fuzz-key-0123456789abcdef"


@pytest.fixture(scope="module")
def live_client(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("fuzz")
    run = Run(train_tiny_run(base, tiny_model, "freeze", "1", 20))
    # Small limits, so the fuzzer reaches them; a high rate limit, so it reaches the model.
    app = create_app(Predictor.from_run(run), ServeSettings(run=str(run.path), max_inputs=8, max_text_chars=200,
                                                           max_body_bytes=5000, rate_limit=1e6, rate_burst=10**6),
                     KeyRing([KEY]), run_info(run))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


class _SchemaOnly:
    labels = ["a", "b"]

    def predict(self, texts, batch_size=32):  # never called: only the schema is read from this app
        raise AssertionError


def _operations():
    """The API's operations, read from the same OpenAPI document /openapi.json serves."""
    app = create_app(_SchemaOnly(), ServeSettings(run="unused"), KeyRing([KEY]), {})
    schema = schemathesis.openapi.from_dict(app.openapi())
    return [result.ok() for result in schema.get_all_operations()]


OPERATIONS = _operations()
SEEN_STATUSES: set[int] = set()


def test_schema_covers_every_route():
    paths = {(op.method.upper(), op.path) for op in OPERATIONS}
    assert {("POST", "/v1/predict"), ("GET", "/v1/model"), ("GET", "/healthz"), ("GET", "/readyz"),
            ("GET", "/metrics")} <= paths


# schemathesis generates the cases (valid and invalid bodies, odd types and sizes); its
# pytest plugin is not used because it does not support pytest 9 yet.
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_input_causes_a_server_error(data, live_client):
    operation = data.draw(st.sampled_from(OPERATIONS))
    case = data.draw(operation.as_strategy())
    for headers in ({"Authorization": f"Bearer {KEY}"}, {}):  # with and without a key
        kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
        response = live_client.request(**kwargs)
        SEEN_STATUSES.add(response.status_code)
        assert response.status_code < 500, (kwargs, response.status_code, response.text[:200])


def test_fuzzing_reached_the_model_and_the_validators():
    # Runs after the fuzz test (file order): a fuzzer stuck at 401 would prove nothing.
    assert {200, 401, 422} <= SEEN_STATUSES, SEEN_STATUSES


@pytest.fixture(scope="module")
def generation_app(tmp_path_factory, tiny_causal_lm):
    """A causal-lm run's server: /v1/predict plus the OpenAI-compatible routes."""
    import json

    from conftest import make_qa_rows

    base = tmp_path_factory.mktemp("fuzz-gen")
    data = base / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_qa_rows(20)))
    assert main(["train", "--task", "causal-lm", "--data", str(data), "--model", tiny_causal_lm, "--output",
                 str(base), "--name", "g", "--max-length", "48", "--max-steps", "1", "--no-baseline",
                 "--eval-answers", "0"]) == 0
    run = Run(base / "g")
    # Small generation limits, so the fuzzer reaches them and each answer is quick.
    app = create_app(Predictor.from_run(run), ServeSettings(run=str(run.path), max_inputs=4, max_text_chars=200,
                                                           max_body_bytes=5000, rate_limit=1e6, rate_burst=10**6,
                                                           max_new_tokens=8, tokens_per_minute=10**9),
                     KeyRing([KEY]), run_info(run))
    with TestClient(app, raise_server_exceptions=False) as client:
        operations = [r.ok() for r in schemathesis.openapi.from_dict(app.openapi()).get_all_operations()]
        yield client, operations, run.path.name


GENERATION_STATUSES: set[int] = set()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_input_to_a_generation_server_causes_a_server_error(data, generation_app):
    client, operations, served = generation_app
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= {op.path for op in operations}
    operation = data.draw(st.sampled_from(operations))
    case = data.draw(operation.as_strategy())
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str) and data.draw(st.booleans()):
        case.body["model"] = served  # a random name is a 404: half the time, ask for the served run
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers={"Authorization": f"Bearer {KEY}"})
    response = client.request(**kwargs)
    GENERATION_STATUSES.add(response.status_code)
    assert response.status_code < 500, (kwargs.get("json"), response.status_code, response.text[:200])



def test_generation_fuzzing_reached_the_model_and_the_validators(generation_app):
    assert {200, 404, 422} <= GENERATION_STATUSES, GENERATION_STATUSES
    client = generation_app[0]
    assert "tunesmith_generated_tokens_total 0" not in client.get("/metrics", headers={
        "Authorization": f"Bearer {KEY}"}).text  # some fuzzed request was answered by the model
