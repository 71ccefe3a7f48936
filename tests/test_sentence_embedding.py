"""Sentence embeddings: the pair formats, splits by query, the ranking loss and retrieval
metrics, and the lifecycle (train, load with sentence-transformers, predict vectors, serve
/v1/predict and OpenAI's /v1/embeddings)."""

from __future__ import annotations

import base64
import json
import random

import numpy as np
import pytest
import torch

from conftest import CUES, FILLER, served_in_thread
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.tasks import TASKS
from tunesmith.tasks.sentence_embedding import retrieval_metrics

EMBED = TASKS["sentence-embedding"]
KEY = "e" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
WORDS = [w for cues in CUES.values() for w in cues]


def pair_rows(n: int, seed: int = 0) -> list[dict]:
    """A query holds a cue word; its positive holds that word's fixed partner (another cue), so
    the untuned model has no reason to rank it first and a trained one learns to."""
    rng = random.Random(seed)
    partner = dict(zip(WORDS, random.Random(1).sample(WORDS, len(WORDS))))
    rows = []
    for _ in range(n):
        word = rng.choice(WORDS)
        rows.append({"anchor": f"{word} {' '.join(rng.sample(FILLER, 2))}",
                     "positive": f"{partner[word]} {' '.join(rng.sample(FILLER, 3))}"})
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


# ---- data, loss, metrics ----------------------------------------------------------------------

@pytest.mark.parametrize("columns", [("anchor", "positive", "negative"), ("query", "pos", "neg"),
                                     ("question", "answer", None)])
def test_the_usual_column_names_are_read(tmp_path, columns):
    from tunesmith.config import TrainConfig

    query, positive, negative = columns
    rows = [{query: r["anchor"], positive: r["positive"], **({negative: "okay plain"} if negative else {})}
            for r in pair_rows(60)]
    splits = EMBED.load_data(TrainConfig(task="sentence-embedding", data=write_jsonl(tmp_path / "p.jsonl", rows)))
    first = splits.train.texts[0]
    assert set(first) == ({"anchor", "positive", "negative"} if negative else {"anchor", "positive"})
    queries = {name: {p["anchor"] for p in split.texts} for name, split in
               (("train", splits.train), ("val", splits.val), ("test", splits.test))}
    assert not queries["train"] & queries["test"] and not queries["train"] & queries["val"]  # split by query


@pytest.mark.parametrize("rows, message", [
    ([{"anchor": "good", "positive": ""}], "p.jsonl line 1: the positive text is empty"),
    ([{"sentence1": "good", "sentence2": "great", "score": "very"}], "p.jsonl line 1: column 'score' holds 'very'"),
    ([{"text": "good", "other": "great"}], "name them anchor and positive"),
])
def test_bad_pair_files_are_one_error_naming_the_problem(tmp_path, rows, message):
    from tunesmith.config import TrainConfig

    with pytest.raises(UserError, match=message):
        EMBED.load_data(TrainConfig(task="sentence-embedding", data=write_jsonl(tmp_path / "p.jsonl", rows * 4)))


def test_retrieval_metrics_follow_their_definitions():
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.8, 0.9], [0.1, 0.2, 0.3]])
    relevant = [{0}, {1}, {0, 1}]
    found = retrieval_metrics(scores, relevant)
    assert found["recall_at_1"] == pytest.approx(1 / 3)  # only the first query ranks its passage first
    assert found["mrr_at_10"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    third = (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))  # hits at ranks 2 and 3 of 2 relevant
    assert found["ndcg_at_10"] == pytest.approx((1 + 1 / np.log2(3) + third) / 3)
    assert found["recall_at_10"] == pytest.approx(1.0)


def test_the_ranking_loss_is_low_when_each_query_is_nearest_its_own_positive():
    class Identity(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return torch.nn.functional.normalize(input_ids.float(), dim=-1)

    eye = torch.eye(4)
    keys = torch.arange(4)
    batch = {"input_ids": torch.cat([eye, eye]), "attention_mask": torch.ones(8, 4), "examples": torch.tensor([4]),
             "query_key": keys, "passage_key": keys}
    matched, _ = EMBED.training_loss(Identity(), batch)
    shuffled = {**batch, "input_ids": torch.cat([eye, eye[[1, 2, 3, 0]]])}
    crossed, _ = EMBED.training_loss(Identity(), shuffled)
    assert matched < 0.01 < 5 < crossed
    # Two queries sharing one answer: that answer is no negative for either of them.
    twice = torch.stack([eye[0], eye[1], eye[0], eye[2]])
    shared = {"input_ids": torch.cat([eye, twice]), "attention_mask": torch.ones(8, 4), "examples": torch.tensor([4]),
              "query_key": keys, "passage_key": torch.tensor([0, 1, 0, 2])}
    unmasked = {**shared, "passage_key": keys}
    assert EMBED.training_loss(Identity(), shared)[0] < EMBED.training_loss(Identity(), unmasked)[0]


def test_methods_other_than_full_and_lora_are_refused_in_one_line(tmp_path, tiny_model, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", pair_rows(40))
    assert main(["train", data, "--task", "sentence-embedding", "--method", "freeze", "--model", tiny_model]) == 2
    assert "sentence-embedding trains with full or lora, not freeze" in capsys.readouterr().err


# ---- the lifecycle ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    from tunesmith.runs import Run

    folder = tmp_path_factory.mktemp("embed")
    data = write_jsonl(folder / "pairs.jsonl", pair_rows(300))
    assert main(["train", data, "--task", "sentence-embedding", "--model", tiny_model, "--lr", "3e-3", "--epochs", "10",
                 "--batch-size", "16", "--max-length", "16", "--output", str(folder / "runs"), "--name", "e",
                 "--seed", "0"]) == 0
    return Run(folder / "runs" / "e")


def test_training_beats_the_untuned_model_and_sentence_transformers_loads_the_folder(trained):
    from sentence_transformers import SentenceTransformer

    from tunesmith.inference import Predictor

    metrics = json.loads(trained.metrics_file.read_text())
    assert metrics["test"]["ndcg_at_10"] > metrics["baseline"]["ndcg_at_10"] + 0.2, metrics
    texts = ["good the movie", "bad film plot", "okay"]
    theirs = SentenceTransformer(str(trained.model_dir), device="cpu").encode(texts)
    ours = Predictor.from_run(trained).predict(texts)
    assert np.allclose(theirs, ours, atol=1e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert "SentenceTransformer(" in (trained.model_dir / "README.md").read_text(encoding="utf-8")


def test_predict_writes_vectors_as_npy_or_beside_each_row(trained, tmp_path):
    texts = tmp_path / "texts.csv"
    texts.write_text("id,text\n1,good movie\n2,bad plot\n", encoding="utf-8")
    assert main(["predict", str(trained.path), str(texts), "-o", str(tmp_path / "v.npy")]) == 0
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.shape == (2, 32) and vectors.dtype == np.float32
    assert main(["predict", str(trained.path), str(texts), "-o", str(tmp_path / "v.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["1", "2"] and np.allclose(rows[0]["embedding"], vectors[0], atol=1e-5)


def test_eval_scores_retrieval_on_a_new_file(trained, tmp_path, capsys):
    data = write_jsonl(tmp_path / "more.jsonl", pair_rows(30, seed=9))
    assert main(["eval", str(trained.path), data]) == 0
    assert "NDCG@10" in capsys.readouterr().out


def test_the_openai_client_gets_the_same_vectors_as_predict(trained):
    openai = pytest.importorskip("openai")
    from tunesmith.inference import Predictor
    from tunesmith.serve.app import create_app
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    predictor = Predictor.from_run(trained)
    expected = predictor.predict(["good movie", "bad plot"])
    app = create_app(predictor, ServeSettings(run=str(trained.path)), KeyRing([KEY]), run_info(trained))
    with served_in_thread(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        answer = client.embeddings.create(model=trained.path.name, input=["good movie", "bad plot"])  # base64
        assert np.allclose([d.embedding for d in answer.data], expected, atol=1e-6)
        assert answer.usage.prompt_tokens > 0
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="text-embedding-3-small", input="good")
        with pytest.raises(openai.UnprocessableEntityError):
            client.embeddings.create(model=trained.path.name, input="good", dimensions=8)


def test_predict_and_the_float_format_answer_in_their_documented_shapes(trained):
    from fastapi.testclient import TestClient

    from tunesmith.inference import Predictor
    from tunesmith.serve.app import create_app
    from tunesmith.serve.schemas import EmbeddingOutput
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    app = create_app(Predictor.from_run(trained), ServeSettings(run=str(trained.path)), KeyRing([KEY]), run_info(trained))
    with TestClient(app) as client:
        one = client.post("/v1/predict", headers=AUTH, json={"inputs": ["good movie"]})
        vector = EmbeddingOutput.model_validate(one.json()[0]).embedding
        floats = client.post("/v1/embeddings", headers=AUTH, json={"model": trained.path.name, "input": "good movie",
                                                                   "encoding_format": "float"}).json()
        assert np.allclose(floats["data"][0]["embedding"], vector, atol=1e-6)
        packed = client.post("/v1/embeddings", headers=AUTH, json={"model": trained.path.name, "input": "good movie",
                                                                   "encoding_format": "base64"}).json()
        assert np.allclose(np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), "<f4"), vector, atol=1e-6)
        empty = client.post("/v1/embeddings", headers=AUTH, json={"model": trained.path.name, "input": []})
        assert empty.status_code == 422 and empty.json()["error"]["param"] == "input"


def test_a_mean_pooled_backbone_stays_mean_pooled_in_the_saved_model(tiny_sentence_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    data = write_jsonl(tmp_path / "p.jsonl", pair_rows(40))
    assert main(["train", data, "--task", "sentence-embedding", "--model", tiny_sentence_model, "--max-steps", "2",
                 "--max-length", "16", "--output", str(tmp_path / "runs"), "--name", "m", "--no-baseline"]) == 0
    run = Run(tmp_path / "runs" / "m")
    pooling = json.loads((run.model_dir / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    texts = ["good movie", "bad plot okay"]
    assert np.allclose(SentenceTransformer(str(run.model_dir), device="cpu").encode(texts),
                       Predictor.from_run(run).predict(texts), atol=1e-5)


def test_model_prompts_come_from_the_folder_or_the_e5_family(tmp_path):
    from tunesmith.tasks.sentence_embedding import E5_PROMPTS, model_prompts

    assert model_prompts("/nowhere/x", "intfloat/multilingual-e5-small") == E5_PROMPTS
    assert model_prompts("/nowhere/x", "e5-small") == E5_PROMPTS and model_prompts("/nowhere/x", "minilm") == {}
    assert model_prompts("/nowhere/x", "sentence-transformers/all-MiniLM-L6-v2") == {}
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "q> ", "document": "d> "}}))
    assert model_prompts(str(tmp_path), "e5-small") == {"query": "q> ", "passage": "d> "}  # the folder's own win


def test_prompts_are_trained_with_saved_and_read_by_sentence_transformers(tiny_sentence_model, tmp_path):
    """A model trained with prompts (E5's "query: " / "passage: "; here two words the tiny
    vocabulary knows) reads them before queries and passages in training and prediction; the
    folder keeps them where sentence-transformers reads them, so its encode (the query prompt by
    default, prompt_name="passage" for passages) gives tunesmith's vectors."""
    import shutil

    from sentence_transformers import SentenceTransformer

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    prompted = tmp_path / "prompted"
    shutil.copytree(tiny_sentence_model, prompted)
    prompts = {"query": f"{FILLER[0]} ", "passage": f"{FILLER[1]} "}
    (prompted / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    data = write_jsonl(tmp_path / "p.jsonl", pair_rows(40))
    assert main(["train", data, "--task", "sentence-embedding", "--model", str(prompted), "--max-steps", "2",
                 "--max-length", "16", "--output", str(tmp_path / "runs"), "--name", "m", "--no-baseline"]) == 0
    run = Run(tmp_path / "runs" / "m")
    saved = json.loads((run.model_dir / "config_sentence_transformers.json").read_text())
    assert saved["prompts"] == prompts and saved["default_prompt_name"] == "query"
    predictor = Predictor.from_run(run)
    texts = ["good movie", "bad plot okay"]
    queries, passages = predictor.predict(texts), predictor.predict([{"passage": t} for t in texts])
    plain = EMBED.predict(predictor.model, EMBED.encode(predictor.tokenizer.tokenizer, texts, None, [], 16))
    assert not np.allclose(queries, passages, atol=1e-4) and not np.allclose(queries, plain, atol=1e-4)
    theirs = SentenceTransformer(str(run.model_dir), device="cpu")
    assert np.allclose(theirs.encode(texts), queries, atol=1e-5)
    assert np.allclose(theirs.encode(texts, prompt_name="passage"), passages, atol=1e-5)


# ---- scored pairs -------------------------------------------------------------------------------

def scored_rows(n: int, seed: int = 0) -> list[dict]:
    """Two texts, each with a cue word, and a score on STS-B's 0-5 scale: 5 when the second
    word is the first's fixed partner (pair_rows), 2 when it is of the same sentiment, else 0."""
    rng = random.Random(seed)
    partner = dict(zip(WORDS, random.Random(1).sample(WORDS, len(WORDS))))
    group = {w: name for name, words in CUES.items() for w in words}
    rows = []
    for _ in range(n):
        first = rng.choice(WORDS)
        second = partner[first] if rng.random() < 0.4 else rng.choice(WORDS)
        score = 5.0 if second == partner[first] else 2.0 if group[second] == group[partner[first]] else 0.0
        rows.append({"sentence1": f"{first} {' '.join(rng.sample(FILLER, 2))}",
                     "sentence2": f"{second} {' '.join(rng.sample(FILLER, 3))}", "score": score})
    return rows


def test_scored_pairs_are_read_and_a_bad_score_names_its_row(tmp_path):
    from tunesmith.config import TrainConfig
    from tunesmith.tasks.sentence_embedding import scored

    splits = EMBED.load_data(TrainConfig(task="sentence-embedding", data=write_jsonl(tmp_path / "s.jsonl",
                                                                                  scored_rows(60))))
    assert scored(splits.train) and {type(s) for s in splits.train.labels} == {float}
    bad = scored_rows(10)
    bad[3]["score"] = "high"
    with pytest.raises(UserError, match="line 4: column 'score' holds 'high', not a number"):
        EMBED.load_data(TrainConfig(task="sentence-embedding", data=write_jsonl(tmp_path / "b.jsonl", bad)))
    both = [{**row, "negative": "x"} for row in scored_rows(10)]
    with pytest.raises(UserError, match="both a score column"):
        EMBED.load_data(TrainConfig(task="sentence-embedding", data=write_jsonl(tmp_path / "n.jsonl", both)))


def test_cosent_is_low_when_the_cosines_keep_the_order_of_the_scores():
    from tunesmith.tasks.sentence_embedding import cosent_loss

    scores = torch.tensor([5.0, 2.0, 0.0])
    kept, reversed_ = cosent_loss(torch.tensor([0.9, 0.5, 0.1]), scores), cosent_loss(torch.tensor([0.1, 0.5, 0.9]), scores)
    assert kept < 0.01 < 10 < reversed_
    assert cosent_loss(torch.tensor([0.2, 0.2]), torch.tensor([1.0, 1.0])) == 0  # equal scores: nothing to order


def test_scored_pairs_train_to_a_higher_spearman_than_the_untuned_model(tiny_model, tmp_path, capsys):
    from tunesmith.runs import Run

    data = write_jsonl(tmp_path / "sts.jsonl", scored_rows(600))
    assert main(["train", data, "--task", "sentence-embedding", "--model", tiny_model, "--lr", "3e-3", "--epochs", "10",
                 "--batch-size", "16", "--max-length", "16", "--output", str(tmp_path / "runs"), "--name", "s",
                 "--seed", "0"]) == 0
    run = Run(tmp_path / "runs" / "s")
    assert run.settings().metric == "spearman"  # chosen because the pairs are scored
    metrics = json.loads(run.metrics_file.read_text())
    assert metrics["test"]["spearman"] > metrics["baseline"]["spearman"] + 0.3, (metrics["test"], metrics["baseline"])
    capsys.readouterr()
    assert main(["eval", str(run.path), write_jsonl(tmp_path / "more.jsonl", scored_rows(40, seed=4))]) == 0
    assert "Spearman" in capsys.readouterr().out
    assert main(["train", data, "--task", "sentence-embedding", "--model", tiny_model, "--metric", "ndcg_at_10",
                 "--output", str(tmp_path / "runs"), "--name", "wrong"]) == 2
    assert "--metric ndcg_at_10: these data are scored pairs" in capsys.readouterr().err


def test_the_onnx_export_gives_the_same_vectors(trained):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tunesmith.inference import Predictor

    assert main(["export", str(trained.path)]) == 0
    texts = ["good film", "a very bad plot", "okay"]
    torch_vectors, onnx_vectors = (Predictor.from_run(trained, backend).predict(texts) for backend in ("torch", "onnx"))
    assert np.allclose(onnx_vectors, torch_vectors, atol=1e-4)
