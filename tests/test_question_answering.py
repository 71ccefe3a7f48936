"""Extractive question answering: the formats it reads and the spans it checks, SQuAD's and
CMRC's scoring, windows over long contexts, the no-answer threshold, and the lifecycle (train,
reload in transformers' pipeline, predict, eval, serve)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from conftest import save_tiny_bert
from tunesmith.cli import main
from tunesmith.data import questions
from tunesmith.errors import UserError
from tunesmith.evaluate.answers import answer_metrics, cmrc_tokens, score
from tunesmith.tasks import TASKS, infer_task
from tunesmith.tasks.question_answering import _decode, _windows, best_threshold

QA = TASKS["question-answering"]
THINGS = ["sky", "grass", "snow", "coal", "sun", "sea", "rose", "leaf"]
COLOURS = ["blue", "green", "white", "black", "yellow", "red", "grey", "pink"]
FILLER = ["today", "we", "saw", "that", "and", "then", "it", "was", "nice"]


def qa_rows(n: int, seed: int = 0, unanswerable: float = 0.0) -> list[dict]:
    """A context stating a thing's colour, among filler words; the question asks for the colour
    or for the thing, so the answer depends on the question (a probe on the context's token
    states alone cannot tell which). With `unanswerable`, that share of contexts states no colour
    and the question asks for it."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        thing, colour = rng.choice(THINGS), rng.choice(COLOURS)
        before, after = (" ".join(rng.sample(FILLER, rng.randint(0, 3))) for _ in range(2))
        if rng.random() < unanswerable:
            context = " ".join(f"{before} we saw {thing} {after} .".split())
            rows.append({"context": context, "question": f"what is the colour of {thing}",
                         "answers": {"text": [], "answer_start": []}})
            continue
        context = " ".join(f"{before} the colour of {thing} is {colour} {after} .".split())
        if rng.random() < 0.5:
            question, answer, at = f"what is the colour of {thing}", colour, context.index(f" is {colour}") + 4
        else:
            question, answer, at = f"which thing is {colour}", thing, context.index(f"of {thing} is") + 3
        rows.append({"context": context, "question": question, "answers": {"text": [answer], "answer_start": [at]}})
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def squad(rows: list[dict], v2: bool = True) -> dict:
    """Rows in SQuAD's nested layout, one paragraph per row."""
    paragraphs = [{"context": r["context"], "qas": [{
        "id": str(i), "question": r["question"], "is_impossible": not r["answers"]["text"],
        "answers": [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]}]}
        for i, r in enumerate(rows)]
    if not v2:
        for p in paragraphs:
            p["qas"][0].pop("is_impossible")
    return {"version": "v2.0" if v2 else "1.1", "data": [{"title": "colours", "paragraphs": paragraphs}]}


@pytest.fixture(scope="session")
def tiny_qa_model(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-qa-bert")
    save_tiny_bert(folder, sorted(set(THINGS + COLOURS + FILLER + "the colour of is . what which thing".split())))
    return str(folder)


# ---- reading ----------------------------------------------------------------------------------

def test_squad_datasets_jsonl_and_csv_layouts_read_to_the_same_questions(tmp_path):
    rows = qa_rows(6, unanswerable=0.3)
    nested = tmp_path / "squad.json"
    nested.write_text(json.dumps(squad(rows)), encoding="utf-8")
    flat = write_jsonl(tmp_path / "flat.jsonl", rows)
    listed = write_jsonl(tmp_path / "listed.jsonl", [
        {"context": r["context"], "question": r["question"],
         "answers": [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]}
        for r in rows])
    table = tmp_path / "t.csv"
    import csv

    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["context", "question", "answer", "answer_start"])
        for r in rows:
            writer.writerow([r["context"], r["question"], (r["answers"]["text"] or [""])[0],
                             (r["answers"]["answer_start"] or [""])[0]])
    read = [[(q.context, q.question, q.answers) for q in questions.read_file(p)] for p in (nested, flat, listed, table)]
    assert read[0] == read[1] == read[2] == read[3]
    assert sum(not answers for _, _, answers in read[0]) == sum(not r["answers"]["text"] for r in rows) > 0
    assert infer_task(str(nested)) == infer_task(flat) == "question-answering"


def test_an_answer_start_that_is_off_moves_to_its_text_and_the_row_is_named(tmp_path):
    context = "the colour of sky is blue . the colour of sea is blue ."
    path = write_jsonl(tmp_path / "d.jsonl", [{"context": context, "question": "what is the colour of sea",
                                               "answers": {"text": ["blue"], "answer_start": [46]}}])
    warnings: list[str] = []
    (found,) = questions.read_file(path, warnings=warnings)
    assert found.answers == [questions.Answer("blue", context.rindex("blue"))]  # the nearer of the two
    assert len(warnings) == 1 and "line 1" in warnings[0] and "answer_start 46" in warnings[0]


@pytest.mark.parametrize("row, message", [
    ({"context": "the sky is blue .", "question": "what colour", "answers": {"text": ["red"], "answer_start": [11]}},
     "line 1 answers[0]: the answer 'red' is not in the context"),
    ({"context": "", "question": "what colour", "answers": []}, "line 1: field 'context' is missing or empty"),
    ({"context": "the sky is blue .", "answers": []}, "line 1: field 'question' is missing or empty"),
    ({"context": "the sky is blue .", "question": "q", "answers": {"text": ["blue"], "answer_start": []}},
     "needs lists 'text' and 'answer_start' of one length"),
    ({"context": "the sky is blue .", "question": "q", "answers": [{"text": "blue", "answer_start": "x"}]},
     "answers[0]: 'answer_start' 'x' is not a character offset"),
    ({"context": "the sky is blue .", "question": "q"}, "no field 'answers' or 'answer'"),
])
def test_a_bad_row_is_one_error_naming_the_file_row_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        questions.read_file(path)


def test_a_squad_error_names_the_nested_position(tmp_path):
    document = squad(qa_rows(3))
    document["data"][0]["paragraphs"][2]["qas"][0]["answers"][0]["text"] = "purple"
    path = tmp_path / "s.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(UserError, match=r"data\[0\]\.paragraphs\[2\]\.qas\[0\] answers\[0\]: the answer 'purple'"):
        questions.read_file(path)


def test_splits_are_cut_by_context_so_no_context_is_in_two_splits(tmp_path):
    from tunesmith.config import TrainConfig

    rows = qa_rows(60)
    rows += [{**r, "question": r["question"] + " today"} for r in rows[:30]]  # a second question on 30 contexts
    splits = QA.load_data(TrainConfig(task="question-answering", data=write_jsonl(tmp_path / "d.jsonl", rows)))
    contexts = [{pair["context"] for pair in part.texts} for part in (splits.train, splits.val, splits.test)]
    assert not (contexts[0] & contexts[1]) and not (contexts[0] & contexts[2]) and not (contexts[1] & contexts[2])
    assert sum(len(part) for part in (splits.train, splits.val, splits.test)) == 90


# ---- scoring ----------------------------------------------------------------------------------

def test_answers_are_scored_as_squad_and_cmrc_score_them():
    # SQuAD: case, punctuation and articles do not count; F1 over the bag of words.
    assert score("The Eiffel Tower!", ["eiffel tower"]) == (1.0, 1.0)
    exact, f1 = score("in the Eiffel Tower", ["Eiffel Tower"])
    assert exact == 0.0 and f1 == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert score("Paris", ["London", "paris"]) == (1.0, 1.0)  # the best of several references
    # CMRC: a Chinese character is a token, English runs one token; F1 over the longest common substring.
    assert cmrc_tokens("北京大学2012年, Peking") == ["北", "京", "大", "学", "2012", "年", "peking"]
    exact, f1 = score("北京", ["北京大学"])
    assert exact == 0.0 and f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert score("《北京大学》", ["北京大学"]) == (1.0, 1.0)
    # Unanswerable: only an empty prediction is right.
    assert score("", []) == (1.0, 1.0) and score("blue", []) == (0.0, 0.0)
    metrics = answer_metrics(["blue", "", "red"], [["blue"], [], ["green"]])
    assert metrics["f1"] == pytest.approx(2 / 3) and metrics["has_answer_f1"] == 0.5 and metrics["no_answer_f1"] == 1.0


def test_the_no_answer_threshold_maximises_f1_on_the_margins():
    outputs = [{"best": "blue", "no_answer_margin": m} for m in (-5.0, -1.0, 2.0, 4.0)]
    references = [["blue"], ["blue"], [], []]  # answer the two of low margin, leave the two of high margin empty
    threshold = best_threshold(outputs, references)
    assert -1.0 <= threshold < 2.0
    assert best_threshold(outputs, [[], [], [], []]) < -5.0  # answering none is best


# ---- windows ----------------------------------------------------------------------------------

def test_long_contexts_are_read_in_overlapping_windows_and_every_answer_maps_back(tiny_qa_model):
    """With a 20-token window, every answer of a long context is whole in some window, and the
    window's gold positions decode to exactly its characters."""
    from tunesmith.tasks.question_answering import SpanFeatures, _positions

    tokenizer = QA.load_processor(tiny_qa_model)
    rows = qa_rows(40, seed=3)
    context = " ".join(r["context"] for r in rows[:8])  # about 90 tokens
    for target in range(0, len(context.split()), 7):
        word = context.split()[target]
        start = len(" ".join(context.split()[:target])) + (1 if target else 0)
        answers = [{"text": word, "answer_start": start}]
        windows = list(_windows(tokenizer, "what is the colour of sky", context, 20))
        assert len(windows) > 3 and all(len(row["input_ids"]) <= 20 for row, _ in windows)
        held = [(row, offsets, _positions(offsets, answers)) for row, offsets in windows]
        holding = [(row, offsets, p) for row, offsets, p in held if p != (0, 0)]
        assert holding, word
        row, offsets, (first, last) = holding[0]
        features = SpanFeatures([row], tokenizer.pad_token_id, meta=[{"question": 0, "offsets": offsets}],
                                contexts=[context], asked=[0])
        start_logits, end_logits = np.zeros(len(row["input_ids"])), np.zeros(len(row["input_ids"]))
        start_logits[first], end_logits[last] = 10.0, 10.0
        (answer,) = _decode(features, [start_logits], [end_logits], None)
        assert (answer["answer"], answer["start"]) == (word, start)


# ---- the lifecycle ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tiny_qa_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("qa")
    data = write_jsonl(folder / "train.jsonl", qa_rows(300, unanswerable=0.2))
    code = main(["train", data, "--model", tiny_qa_model, "--lr", "1e-3", "--epochs", "20", "--batch-size", "16",
                 "--max-length", "48", "--output", str(folder / "runs"), "--name", "qa", "--seed", "0"])
    assert code == 0
    return folder


def test_training_beats_the_probe_and_tunes_a_no_answer_threshold(trained):
    from tunesmith.runs import Run

    run = Run(trained / "runs" / "qa")
    assert run.settings().task == "question-answering"  # inferred from the columns
    metrics = json.loads(run.metrics_file.read_text())
    assert metrics["test"]["f1"] > metrics["baseline"]["f1"] + 0.15, (metrics["test"], metrics["baseline"])
    assert {"has_answer_f1", "no_answer_f1"} <= set(metrics["test"])
    config = json.loads((run.model_dir / "config.json").read_text())
    assert config["tunesmith_no_answer_threshold"] == metrics["tuned_on_validation"]["no_answer_threshold"]


def test_the_model_card_recipe_finds_the_same_spans_with_transformers_alone(trained):
    """transformers 5 dropped the question-answering pipeline: the card's lines are the way."""
    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    run = Run(trained / "runs" / "qa")
    card = (run.model_dir / "README.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in card.split("```python\n")[1:]]
    (recipe,) = [block.replace("path/to/model", str(run.model_dir)) for block in blocks if "offset_mapping" in block]
    inputs = [pair for pair, answers in zip(run.split("test").texts, run.split("test").labels) if answers][:8]
    ours = Predictor.from_run(run).predict(inputs)
    for pair, answer in zip(inputs, ours):
        scope: dict = {}
        exec(recipe.replace('question, context = "Who wrote Notes?", "Ada wrote Notes in 1843."',
                            f"question, context = {pair['question']!r}, {pair['context']!r}"), scope)
        assert scope["answer"] == answer["best"], (pair, answer)


def test_predict_writes_the_answer_and_its_offsets_beside_each_row(trained):
    rows = qa_rows(4, seed=9)
    inputs = write_jsonl(trained / "inputs.jsonl", [{"context": r["context"], "question": r["question"]} for r in rows])
    out = trained / "predicted.jsonl"
    assert main(["predict", str(trained / "runs" / "qa"), inputs, "-o", str(out)]) == 0
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(written) == 4
    for row in written:
        if row["answer"]:
            assert row["context"][row["answer_start"]:row["answer_end"]] == row["answer"]
        assert 0.0 <= row["score"] <= 1.0


def test_eval_scores_a_squad_file(trained, capsys):
    path = trained / "dev.json"
    path.write_text(json.dumps(squad(qa_rows(20, seed=11, unanswerable=0.2))), encoding="utf-8")
    assert main(["eval", str(trained / "runs" / "qa"), str(path)]) == 0
    assert "exact match" in capsys.readouterr().out


def test_serving_answers_one_question_or_many_about_one_context(trained):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run
    from tunesmith.serve.app import create_app
    from tunesmith.serve.schemas import Answer, Answers
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    run = Run(trained / "runs" / "qa")
    key = {"Authorization": "Bearer " + "k" * 24}
    context = "the colour of sky is blue . the colour of coal is black ."
    with TestClient(create_app(Predictor.from_run(run), ServeSettings(run=str(run.path)), KeyRing(["k" * 24]),
                               run_info(run))) as client:
        assert client.get("/v1/model", headers=key).json()["input"] == "question"
        answer = client.post("/v1/predict", headers=key, json={"inputs": [
            {"question": "what is the colour of sky", "context": context},
            {"question": ["what is the colour of sky", "what is the colour of coal"], "context": context}]})
        assert answer.status_code == 200, answer.text
        one, many = answer.json()
        Answer.model_validate(one)
        assert len(Answers.model_validate(many).answers) == 2
        assert many["answers"][0] == one  # the same question, the same answer
        for found in [one, *many["answers"]]:
            if found["answer"]:
                assert context[found["start"]:found["end"]] == found["answer"]
        missing = client.post("/v1/predict", headers=key, json={"inputs": [{"question": "what colour"}]})
        assert missing.status_code == 422
        empty = client.post("/v1/predict", headers=key, json={"inputs": [{"question": [], "context": context}]})
        assert empty.status_code == 422 and "inputs[0]" in empty.json()["error"]


def test_the_onnx_export_finds_the_same_answers(trained, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    run = Run(trained / "runs" / "qa")
    assert main(["export", str(run.path)]) == 0
    inputs = run.split("test").texts[:10]
    torch_answers, onnx_answers = (Predictor.from_run(run, backend).predict(inputs) for backend in ("torch", "onnx"))
    assert [a["answer"] for a in onnx_answers] == [a["answer"] for a in torch_answers]
    assert np.allclose([a["score"] for a in onnx_answers], [a["score"] for a in torch_answers], atol=1e-4)


# ---- the real data set ------------------------------------------------------------------------

def test_duie_qa_questions_are_answered_by_spans_of_their_sentences():
    from tunesmith.data import relations

    if not (relations.sdist_folder() / relations.DUIE_SDIST).is_file():
        pytest.skip("the casrel-datautils source distribution is not downloaded (make data)")
    found = questions.duie_questions()
    assert len(found) > 20000
    unanswerable = [q for q in found if not q.answers]
    assert 0.1 < len(unanswerable) / len(found) < 0.2
    assert all(q.context[a.start:a.start + len(a.text)] == a.text for q in found for a in q.answers)
    assert all(q.question.endswith(("是谁？", "是什么？")) for q in found[:500])
    assert infer_task("duie-qa") == "question-answering"


def test_compare_scores_question_answering_runs_by_their_f1(tiny_qa_model, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", qa_rows(60))
    assert main(["compare", data, "--methods", "freeze,full", "--model", tiny_qa_model, "--max-steps", "3",
                 "--max-length", "32", "--output-folder", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")
    assert "test f1" in table and "| freeze |" in table and "| full |" in table
