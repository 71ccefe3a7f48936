"""The reranker: candidate lists from query-positive pairs, the listwise loss, and the lifecycle
(train beats the untuned embeddings, CrossEncoder loads the folder, /v1/rerank orders documents)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_sentence_embedding import pair_rows, write_jsonl
from tunesmith.cli import main
from tunesmith.tasks.reranker import CANDIDATES, candidate_lists

KEY = "r" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_each_query_ranks_its_positives_hard_negatives_and_drawn_passages():
    pairs = [{"anchor": f"q{i}", "positive": f"p{i}"} for i in range(30)]
    pairs += [{"anchor": "q0", "positive": "p0b", "negative": "n0"}]
    queries, candidates, relevant = candidate_lists(pairs)
    assert queries[0] == "q0" and candidates[0][:3] == ["p0", "p0b", "n0"] and relevant[0] == {0, 1}
    assert all(len(c) == CANDIDATES and len(set(c)) == CANDIDATES for c in candidates)
    assert candidate_lists(pairs) == (queries, candidates, relevant)  # the same lists every time
    assert all(f"p{i}" not in c[1:] for i, c in enumerate(candidates[1:], start=1))  # a positive is never a drawn negative


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    from tunesmith.runs import Run

    folder = tmp_path_factory.mktemp("rerank")
    data = write_jsonl(folder / "pairs.jsonl", pair_rows(300))
    assert main(["train", data, "--task", "reranker", "--model", tiny_model, "--lr", "1e-3", "--epochs", "30",
                 "--max-length", "24", "--output", str(folder / "runs"), "--name", "r", "--seed", "0"]) == 0
    return Run(folder / "runs" / "r")


def test_training_beats_the_untuned_embeddings_and_cross_encoder_loads_the_folder(trained):
    from sentence_transformers import CrossEncoder

    from tunesmith.inference import Predictor

    metrics = json.loads(trained.metrics_file.read_text())
    assert metrics["test"]["ndcg_at_10"] > metrics["baseline"]["ndcg_at_10"] + 0.1, (metrics["test"], metrics["baseline"])
    pairs = [(p["anchor"], p["positive"]) for p in trained.split("test").texts[:6]]
    ours = Predictor.from_run(trained).predict(pairs)
    theirs = CrossEncoder(str(trained.model_dir), device="cpu").predict(pairs, activation_fn=lambda x: x)
    assert np.allclose(ours, theirs, atol=1e-4)
    assert "CrossEncoder" in (trained.model_dir / "README.md").read_text(encoding="utf-8")


def test_rerank_orders_the_documents_best_first(trained):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunesmith.inference import Predictor
    from tunesmith.serve.app import create_app
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    pair = trained.split("test").texts[0]
    documents = [p["positive"] for p in trained.split("test").texts[1:5]] + [pair["positive"]]
    with TestClient(create_app(Predictor.from_run(trained), ServeSettings(run=str(trained.path)), KeyRing([KEY]),
                               run_info(trained))) as client:
        answer = client.post("/v1/rerank", headers=AUTH, json={"query": pair["anchor"], "documents": documents,
                                                               "top_n": 3, "return_documents": True})
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert len(results) == 3 and [r["relevance_score"] for r in results] == sorted(
            (r["relevance_score"] for r in results), reverse=True)
        assert all(r["document"]["text"] == documents[r["index"]] for r in results)
        scored = client.post("/v1/predict", headers=AUTH, json={"inputs": [{"text": pair["anchor"],
                                                                            "text_pair": documents[0]}]})
        assert scored.status_code == 200 and results[0]["relevance_score"] >= scored.json()[0]["score"] - 1e-6
        empty = client.post("/v1/rerank", headers=AUTH, json={"query": "x", "documents": []})
        assert empty.status_code == 422
        assert client.post("/v1/rerank", json={"query": "x", "documents": ["y"]}).status_code == 401
