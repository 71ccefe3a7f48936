"""Generation serving: the continuous-batching engine, its limits, and the OpenAI-compatible
routes driven by OpenAI's own Python client against a real server."""

import json

import pytest

from conftest import make_qa_rows, served_in_thread
from tunesmith.cli import main

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tunesmith.generation import GenerationSettings, generate  # noqa: E402
from tunesmith.inference import Predictor  # noqa: E402
from tunesmith.runs import Run  # noqa: E402
from tunesmith.serve.app import create_app  # noqa: E402
from tunesmith.serve.engine import Cancelled, GenerationEngine, Sequence  # noqa: E402
from tunesmith.serve.security import KeyRing  # noqa: E402
from tunesmith.serve.server import run_info  # noqa: E402
from tunesmith.serve.settings import ServeSettings  # noqa: E402

KEY = "g" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def run(tiny_causal_lm, tmp_path_factory) -> Run:
    base = tmp_path_factory.mktemp("gen")
    data = base / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_qa_rows(40)))
    assert main(["train", "--task", "causal-lm", "--data", str(data), "--model", tiny_causal_lm, "--output",
                 str(base), "--name", "chat", "--max-length", "64", "--epochs", "1", "--lr", "3e-3", "--method",
                 "full", "--no-baseline", "--eval-answers", "0"]) == 0
    return Run(base / "chat")


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor.from_run(run)


def greedy(predictor, text: str, n: int) -> str:
    return generate(predictor.model, predictor.tokenizer.tokenizer, [text], GenerationSettings(max_new_tokens=n))[0]


def chat_prompt(predictor, content: str) -> str:
    from tunesmith.data.conversations import render_prompt

    return render_prompt(predictor.tokenizer.tokenizer, [{"role": "user", "content": content}])


def client_for(run, predictor, **settings) -> TestClient:
    app = create_app(predictor, ServeSettings(run=str(run.path), **settings), KeyRing([KEY]), run_info(run))
    return TestClient(app)


# ---- the engine ---------------------------------------------------------------------------------

def test_engine_batches_requests_that_join_and_leave_and_answers_as_generate_does(predictor):
    tokenizer = predictor.tokenizer.tokenizer
    texts = ["what is the colour of sky", "sun", "what is the colour of coal it is", "grass snow blood", "of"]
    lengths = [7, 3, 12, 5, 9]
    steps = []
    engine = GenerationEngine(predictor.model, tokenizer, max_batch=3, on_step=steps.append)
    engine.start()
    try:
        futures = [engine.submit(Sequence(tokenizer(t, add_special_tokens=False)["input_ids"],
                                          GenerationSettings(max_new_tokens=n))) for t, n in zip(texts, lengths)]
        answers = [f.result(timeout=60) for f in futures]
    finally:
        engine.stop()
    for text, n, answer in zip(texts, lengths, answers):
        assert answer.text == greedy(predictor, text, n)  # the same tokens as one at a time
        assert answer.completion_tokens <= n
    assert max(steps) == 3  # rows were decoded together, never more than max_batch
    assert engine.active == 0


def test_a_cancelled_sequence_leaves_the_batch_and_the_others_finish(predictor):
    tokenizer = predictor.tokenizer.tokenizer
    ids = tokenizer("what is the colour of sky", add_special_tokens=False)["input_ids"]
    # Sampling at a high temperature: the tiny model rarely ends an answer early.
    long_settings = GenerationSettings(max_new_tokens=150, temperature=5.0, seed=1)
    engine = GenerationEngine(predictor.model, tokenizer, max_batch=4)
    engine.start()
    try:
        doomed, other = Sequence(ids, long_settings), Sequence(ids, GenerationSettings(max_new_tokens=20))
        engine.submit(doomed)
        engine.submit(other)
        doomed.cancel()
        with pytest.raises(Cancelled):
            doomed.future.result(timeout=30)
        assert other.future.result(timeout=30).text == greedy(predictor, "what is the colour of sky", 20)
        assert len(doomed.generated) < 150
    finally:
        engine.stop()


def test_one_caller_cannot_fill_the_queue_and_callers_join_in_turn(predictor):
    """One key sending many requests once filled the whole generation queue, and every later
    caller waited behind all of them. A caller now holds at most a quarter of the places, and
    the engine admits callers in turn."""
    from tunesmith.serve.engine import Busy

    engine = GenerationEngine(predictor.model, predictor.tokenizer.tokenizer, max_batch=2, max_waiting=8)  # not started
    settings = GenerationSettings(max_new_tokens=1)
    for k in range(2):
        engine.submit(Sequence([1, 2], settings, client="greedy"))
    with pytest.raises(Busy, match="its share of the queue"):
        engine.submit(Sequence([1, 2], settings, client="greedy"))
    engine.submit(Sequence([3], settings, client="patient"))
    order = [engine._next(block=False).client for _ in range(3)]
    assert order == ["greedy", "patient", "greedy"] and engine.waiting == 0


def test_sampling_settings_at_their_extremes_still_pick_a_token():
    import torch

    from tunesmith.serve.engine import _pick

    logits = torch.tensor([0.5, 3.0, -1.0, 2.9])
    generator = torch.Generator().manual_seed(0)
    # top_p 5e-324 is 0 in float32, and logits / 1e-300 overflow: both found by the fuzzer as 500s.
    assert _pick(logits, GenerationSettings(temperature=1.0, top_p=5e-324), generator) == 1
    assert _pick(logits, GenerationSettings(temperature=1e-300), generator) == 1
    picks = {_pick(logits, GenerationSettings(temperature=1.0, top_p=0.9), generator) for _ in range(200)}
    assert picks == {1, 3}  # the nucleus: the two likeliest tokens carry 0.9 of the mass


def test_one_row_that_fails_leaves_alone_and_the_batch_goes_on(predictor):
    tokenizer = predictor.tokenizer.tokenizer

    class OneBadRow(GenerationEngine):
        def _next_token(self, row, logits):
            if row.settings.seed == 13:
                raise RuntimeError("this row's own failure")
            return super()._next_token(row, logits)

    ids = tokenizer("what is the colour of sky", add_special_tokens=False)["input_ids"]
    engine = OneBadRow(predictor.model, tokenizer, max_batch=4)
    engine.start()
    try:
        good = [engine.submit(Sequence(ids, GenerationSettings(max_new_tokens=10))) for _ in range(2)]
        bad = engine.submit(Sequence(ids, GenerationSettings(max_new_tokens=10, seed=13)))
        with pytest.raises(RuntimeError, match="own failure"):
            bad.result(timeout=30)
        assert [f.result(timeout=30).text for f in good] == [greedy(predictor, "what is the colour of sky", 10)] * 2
    finally:
        engine.stop()


def test_stop_strings_end_the_answer_and_streams_never_show_them(predictor):
    tokenizer = predictor.tokenizer.tokenizer
    text = "what is the colour of sky"
    full = greedy(predictor, text, 12)
    assert len(full) > 4
    stop = full[2:4]  # a string the greedy answer contains
    pieces = []
    engine = GenerationEngine(predictor.model, tokenizer)
    engine.start()
    try:
        seq = Sequence(tokenizer(text, add_special_tokens=False)["input_ids"],
                       GenerationSettings(max_new_tokens=12, stop=[stop]), emit=pieces.append)
        answer = engine.submit(seq).result(timeout=30)
    finally:
        engine.stop()
    assert answer.text == full[: full.find(stop)] and answer.finish_reason == "stop"
    assert "".join(pieces) == answer.text


# ---- limits on /v1/predict and the OpenAI routes, in process --------------------------------------

def test_generation_limits_each_answer_with_the_right_status(run, predictor):
    with client_for(run, predictor, max_new_tokens=20, max_request_tokens=400, tokens_per_minute=300) as client:
        over = client.post("/v1/predict", json={"inputs": "sky", "parameters": {"max_new_tokens": 21}}, headers=AUTH)
        assert over.status_code == 422 and over.json()["field"] == "parameters.max_new_tokens"
        many = client.post("/v1/predict", json={"inputs": ["sky"] * 30, "parameters": {"max_new_tokens": 20}},
                           headers=AUTH)
        assert many.status_code == 422 and "limit is 400" in many.json()["error"]
        ok = client.post("/v1/predict", json={"inputs": "sky", "parameters": {"max_new_tokens": 20}}, headers=AUTH)
        assert ok.status_code == 200
        # 300 tokens a minute: the next request of ~140 tokens fits once more, then not.
        statuses = [client.post("/v1/predict", json={"inputs": ["sky of coal"] * 5,
                                                     "parameters": {"max_new_tokens": 20}}, headers=AUTH).status_code
                    for _ in range(3)]
        assert statuses[-1] == 429 and 200 in statuses
        metrics = client.get("/metrics", headers=AUTH).text
        assert "tunesmith_generation_waiting 0" in metrics and "tunesmith_generated_tokens_total" in metrics


def test_a_prompt_longer_than_the_context_is_cut_with_a_warning_or_refused(run, predictor):
    long_prompt = "what is the colour of sky " * 60  # the tiny model's context is 256 tokens
    with client_for(run, predictor) as client:
        cut = client.post("/v1/predict", json={"inputs": long_prompt, "parameters": {"max_new_tokens": 4}},
                          headers=AUTH)
        assert cut.status_code == 200 and "prompt cut to its last 252" in cut.json()[0]["warning"]
    with client_for(run, predictor, long_prompts="error") as client:
        refused = client.post("/v1/predict", json={"inputs": long_prompt, "parameters": {"max_new_tokens": 4}},
                              headers=AUTH)
        assert refused.status_code == 422 and refused.json()["field"] == "inputs[0]"


def test_a_request_past_its_timeout_is_stopped_and_answered_504(run, predictor):
    with client_for(run, predictor, request_timeout_s=0.001) as client:
        late = client.post("/v1/predict", json={"inputs": "sky", "parameters": {"max_new_tokens": 200,
                                                                               "temperature": 5.0, "seed": 3}},
                           headers=AUTH)
        assert late.status_code == 504 and "timeout" in late.json()["error"]
        assert client.app.state.served.engine.active == 0


def test_a_client_that_goes_away_stops_its_generation(run, predictor, monkeypatch):
    from tunesmith.serve import answers

    monkeypatch.setattr(answers, "DISCONNECT_POLL_S", 0.001)  # notice at once, long before the answer ends

    class GoneClient:  # the Request of a client that has disconnected
        async def is_disconnected(self):
            return True

    with client_for(run, predictor) as client:
        state = client.app.state.served
        options = GenerationSettings(max_new_tokens=2000, temperature=5.0, seed=3)
        batch = answers.sequences(state, [answers.Prompt([5, 6, 7])], options)
        with pytest.raises(Cancelled):
            client.portal.call(answers.complete, state, GoneClient(), batch)
        assert batch[0].cancelled.is_set()
        with pytest.raises(Cancelled):
            batch[0].future.result(timeout=30)  # the engine dropped it
        assert len(batch[0].generated) < 2000


def test_a_stream_whose_client_goes_away_stops_its_generation(run, predictor):
    """Starlette closes a streaming response's iterator when its client disconnects; closing
    it cancels the answer in the engine."""
    from tunesmith.serve import answers

    with client_for(run, predictor) as client:
        state = client.app.state.served
        options = GenerationSettings(max_new_tokens=2000, temperature=5.0, seed=3)
        seen = {}

        async def read_one_piece_then_leave():
            stream = answers.pieces(state, answers.Prompt([5, 6, 7]), options)
            seen["first"] = await stream.__anext__()
            await stream.aclose()  # what the server does when the client goes away

        engine = state.engine
        submitted = []
        real_submit = engine.submit
        engine.submit = lambda sequence: (submitted.append(sequence), real_submit(sequence))[1]
        client.portal.call(read_one_piece_then_leave)
        assert isinstance(seen["first"], str) and submitted[0].cancelled.is_set()
        with pytest.raises(Cancelled):
            submitted[0].future.result(timeout=30)
        assert len(submitted[0].generated) < 2000


def test_openai_errors_come_in_openai_shape(run, predictor):
    with client_for(run, predictor, max_new_tokens=20) as client:
        wrong = client.post("/v1/chat/completions", headers=AUTH,
                            json={"model": "other", "messages": [{"role": "user", "content": "sky"}]})
        assert wrong.status_code == 404 and wrong.json()["error"]["param"] == "model"
        big = client.post("/v1/completions", headers=AUTH, json={"model": run.path.name, "prompt": "sky",
                                                                 "max_tokens": 21})
        assert big.status_code == 422 and big.json()["error"]["param"] == "max_tokens"
        lone_surrogate = '{"model": "%s", "messages": [{"role": "user", "content": "\\ud800"}]}' % run.path.name
        bad = client.post("/v1/chat/completions", headers=AUTH | {"Content-Type": "application/json"},
                          content=lone_surrogate)
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "messages[0].content"
        n2 = client.post("/v1/completions", headers=AUTH, json={"model": run.path.name, "prompt": "sky", "n": 2})
        assert n2.status_code == 422
        nokey = client.get("/v1/models")
        assert nokey.status_code == 401 and nokey.json()["error"]["type"] == "authentication_error"


def test_classifier_runs_have_no_openai_routes(tmp_path, tiny_model):
    from conftest import train_tiny_run

    run = Run(train_tiny_run(tmp_path, tiny_model))
    app = create_app(Predictor.from_run(run), ServeSettings(run=str(run.path)), KeyRing([KEY]), run_info(run))
    with TestClient(app) as client:
        assert client.post("/v1/chat/completions", headers=AUTH, json={}).status_code == 404


# ---- OpenAI's own client against a real server ---------------------------------------------------

@pytest.fixture(scope="module")
def server(run, predictor):
    app = create_app(predictor, ServeSettings(run=str(run.path), max_new_tokens=64), KeyRing([KEY]), run_info(run))
    with served_in_thread(app) as url:
        yield f"{url}/v1"


def test_the_openai_client_chats_streams_completes_and_lists_models(server, run, predictor):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server, api_key=KEY, max_retries=0)
    name = run.path.name
    assert [m.id for m in client.models.list().data] == [name]

    question = "what is the colour of sky"
    chat = client.chat.completions.create(model=name, messages=[{"role": "user", "content": question}],
                                          max_tokens=8, temperature=0)
    expected = greedy(predictor, chat_prompt(predictor, question), 8)
    assert chat.choices[0].message.content == expected and chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens <= 8 and chat.usage.prompt_tokens > 0

    stream = client.chat.completions.create(model=name, messages=[{"role": "user", "content": question}],
                                            max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

    done = client.completions.create(model=name, prompt=["sky", "coal"], max_tokens=5, temperature=0)
    assert [c.text for c in done.choices] == [greedy(predictor, "sky", 5), greedy(predictor, "coal", 5)]

    sampled = [client.completions.create(model=name, prompt="sky", max_tokens=10, temperature=1.5, seed=7)
               .choices[0].text for _ in range(2)]
    assert sampled[0] == sampled[1]  # the seed reproduces a sampled answer

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server, api_key="wrong-key-0123456789", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="sky", max_tokens=2)


def test_concurrent_clients_are_batched_and_get_their_own_answers(server, run, predictor):
    openai = pytest.importorskip("openai")
    from concurrent.futures import ThreadPoolExecutor

    client = openai.OpenAI(base_url=server, api_key=KEY, max_retries=0)
    prompts = ["sky", "grass", "snow", "sun", "blood", "coal", "what is", "the colour"]

    def ask(prompt):
        return client.completions.create(model=run.path.name, prompt=prompt, max_tokens=12, temperature=0)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, prompts))
    assert [a.choices[0].text for a in answers] == [greedy(predictor, p, 12) for p in prompts]
