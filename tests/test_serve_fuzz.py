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
