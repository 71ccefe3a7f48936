"""`tunesmith assistant`: routing between template, retrieval, generation and hand-off; the
index saved and loaded; thresholds calibrated on held-out data; the CLI and the HTTP route.
The intent run and the retriever are the tiny BERT; the generator is the tiny Llama."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import yaml

from conftest import CUES, FILLER, make_qa_rows, train_tiny_run
from tunesmith.assistant import calibration
from tunesmith.assistant.index import VectorIndex
from tunesmith.cli import main

KIND = {w: kind for kind, words in CUES.items() for w in words}


def knowledge_base(path, per_word: int = 20, seed: int = 0) -> str:
    """One answer per cue word, asked about in `per_word` ways; the intent is the word's class."""
    rng = random.Random(seed)
    lines = ["id,question,answer,intent"]
    for word, kind in KIND.items():
        for k in range(per_word):
            question = " ".join(rng.sample(FILLER, 2) + [word])
            lines.append(f"{word}-{k},{question},{word} {word} is the answer,{kind}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("assistant")
    intents = train_tiny_run(base, tiny_model, "full", "5", 30)
    kb = knowledge_base(base / "faq.csv")
    assert main(["assistant", "build", "--kb", kb, "--out", str(base / "bot"), "--intents", str(intents),
                 "--model", tiny_model, "--epochs", "2", "--lr", "1e-3"]) == 0
    return base


def _assistant(folder, **overrides):
    from tunesmith.assistant.router import Assistant

    assistant = Assistant(folder)
    assistant.config.update(overrides)
    return assistant


def test_build_calibrates_both_thresholds_on_held_out_data(built):
    settings = json.loads((built / "bot" / "assistant.json").read_text())
    report = json.loads((built / "bot" / "calibration.json").read_text())
    assert 0 <= settings["intent_threshold"] <= 1 and 0 <= settings["retrieval_threshold"] <= 1
    for name in ("intent", "retrieval"):
        curve = report["curves"][name]
        assert curve and all(a["coverage"] >= b["coverage"] for a, b in zip(curve, curve[1:]))  # higher bar, fewer answers
    assert set(report["retrieval"]) == {"before", "after"} and {"ndcg_at_10", "mrr_at_10"} <= set(report["retrieval"]["after"])
    # Fine-tuning on the pairs teaches the random tiny encoder which answer goes with which word.
    assert report["retrieval"]["after"]["mrr_at_10"] > report["retrieval"]["before"]["mrr_at_10"]
    # The retriever is a sentence-embedding run inside the folder; its test questions were not
    # trained on, and they (with the validation questions) calibrated the threshold.
    retriever = built / "bot" / "retriever"
    assert yaml.safe_load((retriever / "config.yaml").read_text())["task"] == "sentence-embedding"
    trained = {json.loads(line)["text"]["anchor"] for line in (retriever / "data" / "train.jsonl").read_text().splitlines()}
    tested = {json.loads(line)["text"]["anchor"] for line in (retriever / "data" / "test.jsonl").read_text().splitlines()}
    assert tested and not tested & trained
    assert (retriever / "model" / "model.safetensors").is_file() and (built / "bot" / "vectors.npy").is_file()


def test_routes_template_retrieval_generation_and_handoff(built, tiny_causal_lm, tmp_path):
    folder = built / "bot"
    confident = _assistant(folder, intent_threshold=0.0)
    confident.scope.threshold = 0.0  # every question in scope (the scope check has its own test below)
    sure = confident.answer("the plot was wonderful")
    assert sure.route == "template" and sure.intent == "positive" and sure.sources and sure.in_scope
    found = _assistant(folder, intent_threshold=1.01, retrieval_threshold=-1.0).answer("the plot was wonderful")
    assert found.route == "retrieval" and found.answer.endswith("is the answer") and not found.handoff
    unsure = _assistant(folder, intent_threshold=1.01, retrieval_threshold=1.01).answer("the plot was wonderful")
    assert unsure.route == "handoff" and unsure.handoff and unsure.sources == []

    from test_causal_lm import write_jsonl

    data = write_jsonl(tmp_path / "qa.jsonl", make_qa_rows(24))
    assert main(["train", "--task", "causal-lm", "--data", data, "--model", tiny_causal_lm, "--output",
                 str(tmp_path), "--name", "gen", "--max-steps", "2", "--no-baseline", "--max-length", "64"]) == 0
    writer = _assistant(folder, intent_threshold=1.01, retrieval_threshold=1.01, generator_run=str(tmp_path / "gen"),
                        max_new_tokens=4)
    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    writer.generator = Predictor.from_run(Run(tmp_path / "gen"))
    written = writer.answer("the plot was wonderful")
    assert written.route == "generation" and len(written.sources) == 3 and not written.handoff


def test_the_index_saves_and_loads_and_faiss_agrees_with_numpy(tmp_path, monkeypatch):
    import tunesmith.assistant.index as index_module

    rng = np.random.default_rng(0)
    vectors, queries = rng.normal(size=(300, 16)), rng.normal(size=(5, 16))
    index = VectorIndex(vectors)
    index.save(tmp_path)
    again = VectorIndex.load(tmp_path)
    sims, rows = index.search(queries, k=4)
    sims2, rows2 = again.search(queries, k=4)
    assert (rows == rows2).all() and np.allclose(sims, sims2, atol=1e-6)
    monkeypatch.setattr(index_module, "backend", lambda: "numpy")
    plain = VectorIndex.load(tmp_path)
    assert plain.faiss is None
    sims3, rows3 = plain.search(queries, k=4)
    assert (rows3 == rows).all() and np.allclose(sims3, sims, atol=1e-5)


def test_calibration_picks_the_lowest_threshold_that_reaches_the_target():
    confidence = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    correct = [True, True, True, True, False, True, False, False]
    curve = calibration.curve(confidence, correct)
    assert curve[0]["coverage"] == 1.0 and curve[0]["accuracy"] == pytest.approx(5 / 8)
    chosen = calibration.choose(curve, 0.8)
    answered = [c for c in confidence if c >= chosen]
    accuracy = np.mean([ok for c, ok in zip(confidence, correct) if c >= chosen])
    assert accuracy >= 0.8 and len(answered) == 6  # 0.5 and up: 5 of 6 right; 0.4 would drop to 5 of 7
    scores = calibration.out_of_scope_scores([0.9, 0.2, 0.3, 0.8], [True, False, True, False], 0.5)
    assert scores == {"precision": 0.5, "recall": 0.5}  # flagged: rows 1 and 2; out of scope: rows 1 and 3


def test_ask_on_the_command_line_and_over_http(built, capsys):
    assert main(["assistant", "ask", str(built / "bot"), "the plot was wonderful", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["route"] in ("template", "retrieval", "handoff") and set(answer) >= {"answer", "confidence", "sources"}
    assert main(["assistant", "ask", str(built / "nowhere"), "hi"]) == 2
    assert "not an assistant folder" in capsys.readouterr().err

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunesmith.assistant.routes import create_app
    from tunesmith.serve.security import KeyRing

    key = "a" * 24
    with TestClient(create_app(_assistant(built / "bot"), KeyRing([key])), base_url="http://localhost") as client:
        assert client.post("/v1/ask", json={"question": "good"}).status_code == 401
        ok = client.post("/v1/ask", json={"question": "the plot was wonderful"},
                         headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and ok.json()["route"] == answer["route"]
        assert client.post("/v1/ask", json={"question": ""}, headers={"Authorization": f"Bearer {key}"}).status_code == 422


def test_scope_flags_confident_questions_far_from_every_training_question(tmp_path):
    """Out-of-scope questions the classifier is as sure of as a typical in-scope one (so its top
    probability cannot catch them) but that lie far from every training question are flagged;
    the threshold lets through the asked-for share of in-scope validation questions; the detector
    saved and loaded scores the same."""
    from tunesmith.assistant import scope

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))
    table = {}
    for k in range(5):
        for i in range(60):
            table[f"train-{k}-{i}"] = centres[k] + 0.2 * rng.normal(size=16)
            table[f"val-{k}-{i}"] = centres[k] + 0.2 * rng.normal(size=16)
    for i in range(40):
        table[f"far-{i}"] = rng.normal(size=16) * 3
    embed = lambda texts: np.stack([table[t] for t in texts])  # noqa: E731
    train = [t for t in table if t.startswith("train")]
    val = [t for t in table if t.startswith("val")]
    val_confidence = rng.uniform(0.5, 1.0, size=len(val))
    detector, curve = scope.fit(embed, train, val, val_confidence, keep=0.95)

    val_scores = detector.score(val_confidence, embed(val))
    assert abs((val_scores >= detector.threshold).mean() - 0.95) < 0.01
    assert curve[0]["in_scope_kept"] == 1.0 and all(a["in_scope_kept"] >= b["in_scope_kept"] for a, b in zip(curve, curve[1:]))
    far = [f"far-{i}" for i in range(40)]
    typical = np.full(len(far), np.median(val_confidence))
    assert (detector.score(typical, embed(far)) < detector.threshold).mean() >= 0.9
    assert (typical < np.quantile(val_confidence, 0.05)).sum() == 0  # max-softmax at the same 95% flags none

    detector.save(tmp_path)
    again = scope.Scope.load(tmp_path)
    assert again.threshold == detector.threshold
    assert np.allclose(again.score(typical, embed(far)), detector.score(typical, embed(far)))
    assert scope.Scope.load(tmp_path / "elsewhere") is None


def test_an_out_of_scope_question_skips_the_intent_template(built):
    folder = built / "bot"
    assert (folder / "scope" / "scope.json").is_file()
    settings = json.loads((folder / "assistant.json").read_text())
    assert settings["keep_in_scope"] == 0.95 and 0 <= settings["scope_threshold"] <= 1
    curve = json.loads((folder / "calibration.json").read_text())["curves"]["scope"]
    assert curve and curve[0]["in_scope_kept"] == 1.0

    sure = _assistant(folder, intent_threshold=0.0)
    sure.scope.threshold = 0.0  # everything in scope: the template answers
    assert sure.answer("the plot was wonderful").route == "template"
    sure.scope.threshold = 1.01  # nothing in scope: the intent's template is not used, however confident
    outside = sure.answer("the plot was wonderful")
    assert outside.route != "template" and outside.in_scope is False and outside.intent == "positive"


def test_build_refuses_a_keep_share_outside_zero_to_one(tmp_path, capsys):
    kb = knowledge_base(tmp_path / "faq.csv", per_word=1)
    assert main(["assistant", "build", "--kb", kb, "--out", str(tmp_path / "bot"), "--keep-in-scope", "0"]) == 2
    assert "--keep-in-scope 0.0" in capsys.readouterr().err and not (tmp_path / "bot").exists()


def test_build_reuses_a_finished_retriever_run_and_refuses_other_tasks(built, capsys):
    """`--retriever RUN` retrieves with that sentence-embedding run (no training, no copy); an
    intent run in its place is refused in one line, leaving nothing behind."""
    kb, retriever = str(built / "faq.csv"), str(built / "bot" / "retriever")
    assert main(["assistant", "build", "--kb", kb, "--out", str(built / "reused"), "--retriever", retriever]) == 0
    settings = json.loads((built / "reused" / "assistant.json").read_text())
    assert settings["retriever_run"] == retriever and not (built / "reused" / "retriever").exists()
    same = np.load(built / "reused" / "vectors.npy"), np.load(built / "bot" / "vectors.npy")
    assert np.allclose(*same, atol=1e-5)  # the same model embeds the same answers
    capsys.readouterr()
    assert main(["assistant", "build", "--kb", kb, "--out", str(built / "wrong"), "--retriever",
                 str(built / "runs" / "r")]) == 2
    assert "must be a sentence-embedding run" in capsys.readouterr().err and not (built / "wrong").exists()


def test_scope_ranks_ties_in_the_middle_of_their_run():
    from tunesmith.assistant.scope import rank

    quantiles = np.array([0.1, 0.5, 1.0, 1.0, 1.0, 1.0])  # a confidence that saturates
    assert rank([0.0], quantiles)[0] == 0.0 and rank([2.0], quantiles)[0] == 1.0
    assert rank([1.0], quantiles)[0] == pytest.approx((2 + 6) / 12)  # the middle of the four 1.0s
    assert rank([0.3], quantiles)[0] == pytest.approx(1 / 6)


def test_no_input_to_the_assistant_causes_a_server_error(built):
    """Fuzzed from its own OpenAPI schema (schemathesis), as `serve` is: no 5xx."""
    schemathesis = pytest.importorskip("schemathesis")
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tunesmith.assistant.routes import create_app
    from tunesmith.serve.security import KeyRing

    key = "assistant-fuzz-key-0123456789"
    app = create_app(_assistant(built / "bot"), KeyRing([key]))
    operations = [r.ok() for r in schemathesis.openapi.from_dict(app.openapi()).get_all_operations()]
    assert "/v1/ask" in {op.path for op in operations}
    seen = set()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data, client):
        case = data.draw(data.draw(st.sampled_from(operations)).as_strategy())
        for headers in ({"Authorization": f"Bearer {key}"}, {}):
            response = client.request(**case.as_transport_kwargs(base_url="http://localhost", headers=headers))
            seen.add(response.status_code)
            assert response.status_code < 500, (case.body, response.status_code, response.text[:200])

    with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as client:
        fuzz(client=client)
        for body in ({"question": ""}, {"question": "x" * 10**5}, {"q": 1}, []):  # and the validators
            answer = client.post("/v1/ask", json=body, headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 422, (body, answer.status_code)
    assert {200, 401} <= seen, seen  # it reached the answers
