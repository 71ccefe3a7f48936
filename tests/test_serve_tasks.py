"""Every servable task answers in its own shape, with the numbers `tunesmith predict` gives."""

import json
import random

import pytest

from conftest import CUES, FILLER
from test_pair_regression_multilabel import SCORE, _sentence, _write
from tunesmith.cli import main

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tunesmith.inference import Predictor  # noqa: E402
from tunesmith.runs import Run  # noqa: E402
from tunesmith.serve.app import create_app  # noqa: E402
from tunesmith.serve.security import KeyRing  # noqa: E402
from tunesmith.serve.server import run_info  # noqa: E402
from tunesmith.serve.settings import ServeSettings  # noqa: E402

KEY = "t" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}


def _train(tmp_path, tiny_model, data, task, *extra) -> Run:
    assert main(["train", "--task", task, "--data", data, "--model", tiny_model, "--output", str(tmp_path),
                 "--name", "r", "--max-length", "24", "--batch-size", "8", "--epochs", "2", "--lr", "3e-3",
                 "--method", "full", "--no-baseline", "--seed", "0", *extra]) == 0
    return Run(tmp_path / "r")


def _client(run: Run) -> TestClient:
    return TestClient(create_app(Predictor.from_run(run), ServeSettings(run=str(run.path)), KeyRing([KEY]), run_info(run)))


def test_regression_answers_a_score(tiny_model, tmp_path):
    rng = random.Random(0)
    rows = [{"text": _sentence(rng, c), "score": SCORE[c]} for _ in range(20) for c in CUES]
    run = _train(tmp_path, tiny_model, _write(tmp_path / "d.csv", rows, ["text", "score"]), "regression",
                 "--label-col", "score")
    with _client(run) as client:
        answer = client.post("/v1/predict", json={"inputs": ["good film", "bad film"]}, headers=AUTH)
        assert answer.status_code == 200
        expected = Predictor.from_run(run).predict(["good film", "bad film"])
        assert [r["score"] for r in answer.json()] == pytest.approx([float(x) for x in expected], abs=1e-5)
        assert client.get("/v1/model", headers=AUTH).json()["metrics"]["test"]["rmse"] >= 0


def test_pair_run_takes_text_pairs_and_says_so_otherwise(tiny_model, tmp_path):
    rng = random.Random(1)
    rows = [{"sentence1": _sentence(rng, a), "sentence2": _sentence(rng, b), "label": str(a == b)}
            for _ in range(10) for a in CUES for b in CUES]
    run = _train(tmp_path, tiny_model, _write(tmp_path / "p.csv", rows, ["sentence1", "sentence2", "label"]),
                 "text-pair-classification")
    with _client(run) as client:
        assert client.get("/v1/model", headers=AUTH).json()["input"] == "text_pair"
        pair = {"text": "good film", "text_pair": "great plot"}
        answer = client.post("/v1/predict", json={"inputs": [pair]}, headers=AUTH)
        assert answer.status_code == 200 and set(answer.json()[0]) == {"label", "score", "scores"}
        expected = Predictor.from_run(run).predict([("good film", "great plot")])[0]
        assert answer.json()[0]["scores"]["True"] == pytest.approx(float(expected[1]), abs=1e-5)
        wrong = client.post("/v1/predict", json={"inputs": "just one text"}, headers=AUTH)
        assert wrong.status_code == 422 and wrong.json()["field"] == "inputs[0]"
        assert "text_pair" in wrong.json()["error"]


def test_multilabel_answers_labels_over_thresholds(tiny_model, tmp_path):
    rng = random.Random(2)
    rows = []
    for _ in range(90):
        present = rng.sample(list(CUES), rng.choice([1, 2]))
        rows.append({"text": " ".join(w for c in present for w in rng.sample(CUES[c], 1)), "labels": "|".join(present)})
    run = _train(tmp_path, tiny_model, _write(tmp_path / "m.csv", rows, ["text", "labels"]),
                 "multi-label-classification")
    thresholds = json.loads((run.model_dir / "config.json").read_text())["tunesmith_thresholds"]
    with _client(run) as client:
        out = client.post("/v1/predict", json={"inputs": "good sad", "parameters": {"top_k": 2}}, headers=AUTH).json()[0]
        assert len(out["scores"]) == 2
        full = client.post("/v1/predict", json={"inputs": "good sad"}, headers=AUTH).json()[0]
        labels = sorted(CUES)
        assert out["labels"] == [l for l, t in zip(labels, thresholds) if full["scores"][l] >= t]


def test_ner_answers_entities_with_offsets(tiny_model, tmp_path):
    rng = random.Random(3)
    lines = []
    for _ in range(80):
        words = rng.sample(FILLER, 3) + [rng.choice(CUES["positive"])]
        rng.shuffle(words)
        lines += [f"{w} {'B-POS' if w in CUES['positive'] else 'O'}" for w in words] + [""]
    (tmp_path / "ner.txt").write_text("\n".join(lines), encoding="utf-8")
    run = _train(tmp_path, tiny_model, str(tmp_path / "ner.txt"), "token-classification", "--epochs", "6")
    text = "the plot was wonderful , really"
    with _client(run) as client:
        out = client.post("/v1/predict", json={"inputs": [text, ""]}, headers=AUTH).json()
        assert out[1] == {"entities": []}
        assert [(e["type"], e["text"], text[e["start"]:e["end"]]) for e in out[0]["entities"]] == \
            [("POS", "wonderful", "wonderful")]


def test_causal_lm_run_generates_and_streams_server_sent_events(tiny_causal_lm, tmp_path):
    from conftest import make_qa_rows
    from tunesmith.data.conversations import render_prompt
    from tunesmith.generation import GenerationSettings, generate

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_qa_rows(40)))
    assert main(["train", "--task", "causal-lm", "--data", str(data), "--model", tiny_causal_lm, "--output",
                 str(tmp_path), "--name", "r", "--max-length", "64", "--epochs", "2", "--lr", "3e-3", "--method",
                 "full", "--no-baseline", "--eval-answers", "0", "--max-new-tokens", "4"]) == 0
    run = Run(tmp_path / "r")
    predictor = Predictor.from_run(run)
    tokenizer = predictor.tokenizer.tokenizer
    prompt = "what is the colour of sky"
    expected = generate(predictor.model, tokenizer, [render_prompt(tokenizer, [{"role": "user", "content": prompt}])],
                        GenerationSettings(max_new_tokens=6))[0]
    with _client(run) as client:
        answer = client.post("/v1/predict", json={"inputs": [prompt], "parameters": {"max_new_tokens": 6}}, headers=AUTH)
        assert answer.status_code == 200 and answer.json() == [{"generated": expected}]  # greedy: the CLI's answer
        with client.stream("POST", "/v1/predict", headers=AUTH,
                           json={"inputs": prompt, "parameters": {"max_new_tokens": 6, "stream": True}}) as events:
            assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
            body = "".join(events.iter_text())
        pieces = [json.loads(line[6:])["text"] for line in body.splitlines() if line.startswith("data: {\"text\"")]
        done = body.split("event: done\ndata: ")[1].split("\n")[0]
        assert json.loads(done) == {"generated": expected} and "".join(pieces) == expected
        two = client.post("/v1/predict", json={"inputs": ["a", "b"], "parameters": {"stream": True}}, headers=AUTH)
        assert two.status_code == 422 and two.json()["field"] == "parameters.stream"


def test_generation_parameters_are_refused_for_classifiers(tiny_model, tmp_path):
    rng = random.Random(0)
    rows = [{"text": _sentence(rng, c), "label": c} for _ in range(10) for c in CUES]
    run = _train(tmp_path, tiny_model, _write(tmp_path / "c.csv", rows, ["text", "label"]), "text-classification")
    with _client(run) as client:
        answer = client.post("/v1/predict", json={"inputs": "good", "parameters": {"temperature": 0.5}}, headers=AUTH)
        assert answer.status_code == 422 and answer.json()["field"] == "parameters.temperature"
