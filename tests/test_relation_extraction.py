"""Relation extraction: the formats it reads, entity marking, splits by sentence, TACRED's
metrics, and the lifecycle (train, reload without tunesmith, predict, eval, serve)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from conftest import save_tiny_bert
from tunesmith.cli import main
from tunesmith.data import relations
from tunesmith.data.relations import Entity, mark
from tunesmith.errors import UserError
from tunesmith.tasks import TASKS
from tunesmith.tasks.relation_extraction import relation_scores

RE = TASKS["relation-extraction"]
PEOPLE, WORKS, PLACES = ["ada", "bob", "cy", "dee"], ["notes", "poems", "songs", "maps"], ["paris", "london", "rome"]
FILLER = ["then", "later", "quietly", "in", "was", "the", "it", "said", "and", "."]
MARKERS = ["@", "*", "#", "^", "person", "work", "place"]


def duie_rows(n: int, seed: int = 0) -> list[dict]:
    """DuIE-style rows (text, spo_list): who wrote what, where someone was born, where a work
    was published; a meeting of two people is a flat row with no relation."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        person, other, work, place = rng.choice(PEOPLE), rng.choice(PEOPLE), rng.choice(WORKS), rng.choice(PLACES)
        filler = " ".join(rng.sample(FILLER[:4], rng.randint(0, 2)))
        kind = rng.randrange(4)
        if kind == 0:
            text, triples = f"{person} {filler} wrote {work} .", [(person, "person", "author_of", work, "work")]
        elif kind == 1:
            text, triples = f"{person} was born in {place} {filler} .", [(person, "person", "born_in", place, "place")]
        elif kind == 2:
            text, triples = f"{work} was published in {place} {filler} .", [(work, "work", "published_in", place, "place")]
        else:
            if other == person:
                other = PEOPLE[(PEOPLE.index(person) + 1) % len(PEOPLE)]
            text = " ".join(f"{person} met {other} {filler} .".split())
            rows.append({"text": text, "head": person, "tail": other, "relation": "no_relation"})
            continue
        rows.append({"text": " ".join(text.split()), "spo_list": [
            {"subject": s, "subject_type": st, "predicate": p, "object": o, "object_type": ot}
            for s, st, p, o, ot in triples]})
    return rows


def flat_rows(n: int, seed: int = 0) -> list[dict]:
    """One pair per row ({text, head, tail, relation}), with the reverse pairs as no_relation."""
    out = []
    for row in duie_rows(n, seed):
        if "spo_list" not in row:
            out.append(row)
            continue
        triple = row["spo_list"][0]
        out.append({"text": row["text"], "head": triple["subject"], "tail": triple["object"],
                    "relation": triple["predicate"]})
        out.append({"text": row["text"], "head": triple["object"], "tail": triple["subject"], "relation": "no_relation"})
    return out


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def tiny_re_model(tmp_path_factory) -> str:
    """A 2-layer BERT whose vocabulary holds the toy words and the entity markers."""
    folder = tmp_path_factory.mktemp("tiny-re-bert")
    save_tiny_bert(folder, sorted(set(PEOPLE + WORKS + PLACES + FILLER + MARKERS + ["wrote", "born", "published", "met"])))
    return str(folder)


# ---- marking and reading -------------------------------------------------------------------

def test_marking_types_entities_and_nests_one_inside_the_other():
    text = "Ada Lovelace wrote the Notes."
    assert mark(text, Entity(0, 12, "person"), Entity(23, 28, "book")) == \
        "@ * person * Ada Lovelace @ wrote the # ^ book ^ Notes # ."
    assert mark(text, Entity(0, 12), Entity(4, 12)) == "@ Ada # Lovelace # @ wrote the Notes."
    assert mark(text, Entity(4, 12), Entity(0, 12)) == "# Ada @ Lovelace @ # wrote the Notes."
    assert mark("三生三世十里桃花由杨幂主演", Entity(0, 8, "影视作品"), Entity(9, 11, "人物")) == \
        "@ * 影视作品 * 三生三世十里桃花 @ 由 # ^ 人物 ^ 杨幂 # 主演"


def test_a_duie_row_gives_every_ordered_entity_pair_and_the_unrelated_ones_are_no_relation(tmp_path):
    row = {"text": "《骑士之爱》是上海社会科学院出版社出版的图书，作者是菲奥娜", "spo_list": [
        {"predicate": "出版社", "object_type": "出版社", "subject_type": "图书作品", "object": "上海社会科学院出版社",
         "subject": "骑士之爱"},
        {"predicate": "作者", "object_type": "人物", "subject_type": "图书作品", "object": "菲奥娜", "subject": "骑士之爱"}]}
    sentences = relations.read_file(_write(tmp_path / "d.jsonl", [row]))
    (sentence,) = sentences
    labelled = {(sentence.text[p.head.start:p.head.end], sentence.text[p.tail.start:p.tail.end]): p.relation
                for p in sentence.pairs}
    assert labelled[("骑士之爱", "上海社会科学院出版社")] == "出版社"
    assert labelled[("骑士之爱", "菲奥娜")] == "作者"
    assert labelled[("菲奥娜", "骑士之爱")] == "no_relation"  # the direction matters
    assert len(labelled) == 6  # 3 entities, every ordered pair
    assert sentence.pairs[0].head.type == "图书作品"


def test_flat_tacred_semeval_and_csv_rows_read_to_the_same_spans(tmp_path):
    text = "ada wrote notes ."
    flat = relations.read_file(_write(tmp_path / "f.jsonl", [
        {"text": text, "head": "ada", "tail": {"start": 10, "end": 15, "type": "work"}, "relation": "author_of"}]))
    tacred = relations.read_file(_write_json(tmp_path / "t.json", [
        {"token": text.split(), "subj_start": 0, "subj_end": 0, "obj_start": 2, "obj_end": 2, "subj_type": "PERSON",
         "obj_type": "WORK", "relation": "author_of"}]))
    semeval = tmp_path / "s.txt"
    semeval.write_text('1\t"<e1>ada</e1> wrote <e2>notes</e2> ."\nauthor_of(e1,e2)\nComment: toy\n\n', encoding="utf-8")
    csv = tmp_path / "c.csv"
    csv.write_text("text,head,tail,relation,tail_type\nada wrote notes .,ada,notes,author_of,work\n", encoding="utf-8")
    for sentences, relation in ((flat, "author_of"), (tacred, "author_of"), (relations.read_file(semeval), "author_of(e1,e2)"),
                                (relations.read_file(csv), "author_of")):
        (pair,) = sentences[0].pairs
        assert sentences[0].text == text
        assert (pair.head.start, pair.head.end, pair.tail.start, pair.tail.end) == (0, 3, 10, 15)
        assert pair.relation == relation
    assert relations.read_file(csv)[0].pairs[0].where.endswith("c.csv row 1")


@pytest.mark.parametrize("row, message", [
    ({"text": "ada wrote notes", "head": "bob", "tail": "notes", "relation": "r"}, "line 1 field 'head': 'bob' does not occur"),
    ({"text": "ada wrote notes", "head": {"text": "ada", "start": 1, "end": 4}, "tail": "notes", "relation": "r"},
     "the text at 1:4 is 'da ', not 'ada'"),
    ({"text": "ada wrote notes", "head": "ada", "relation": "r"}, "field 'tail' is missing"),
    ({"text": "ada wrote notes", "head": "ada", "tail": "notes"}, "field 'relation' is missing"),
    ({"text": "ada wrote notes", "head": {"start": 0, "end": 7}, "tail": {"start": 4, "end": 9}, "relation": "r"},
     "overlap without one containing the other"),
    ({"text": "", "head": "a", "tail": "b", "relation": "r"}, "field 'text' is missing or empty"),
])
def test_a_bad_row_is_one_error_naming_the_file_line_and_field(tmp_path, row, message):
    with pytest.raises(UserError, match="d.jsonl line 1") as caught:
        relations.read_file(_write(tmp_path / "d.jsonl", [row]))
    assert message in str(caught.value)


def test_splits_are_cut_by_sentence_so_no_sentence_is_in_two_splits(tmp_path):
    from tunesmith.config import TrainConfig

    data = _write(tmp_path / "d.jsonl", duie_rows(120))
    splits = RE.load_data(TrainConfig(task="relation-extraction", data=data))
    plain = {name: {_unmarked(t) for t in split.texts} for name, split in
             (("train", splits.train), ("val", splits.val), ("test", splits.test))}
    assert not plain["train"] & plain["test"] and not plain["train"] & plain["val"] and not plain["val"] & plain["test"]
    assert "no_relation" in splits.labels and "author_of" in splits.labels


def _unmarked(text: str) -> str:
    for noise in ("@ * person *", "# ^ person ^", "@ * work *", "# ^ work ^", "@ * place *", "# ^ place ^", "@", "#"):
        text = text.replace(noise, " ")
    return " ".join(text.split())


def test_micro_f1_leaves_no_relation_out_as_tacred_scores_it():
    labels = ["author_of", "born_in", "no_relation"]
    truth = np.array([0, 0, 1, 2, 2])
    predicted = np.array([0, 2, 1, 0, 2])  # one hit each, a miss (said none), a false alarm
    scores = relation_scores(truth, predicted, labels)
    assert scores["precision"] == pytest.approx(2 / 3)  # 3 relations said, 2 right
    assert scores["recall"] == pytest.approx(2 / 3)  # 3 relations held, 2 found
    assert scores["micro_f1"] == pytest.approx(2 / 3)
    assert scores["macro_f1"] == pytest.approx((2 * 0.5 * 0.5 / 1.0 + 1.0) / 2)  # author_of P=R=1/2; born_in 1


# ---- the lifecycle --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tiny_re_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("re")
    data = _write(folder / "train.jsonl", duie_rows(240))
    code = main(["train", data, "--task", "relation-extraction", "--model", tiny_re_model, "--method", "full",
                 "--lr", "3e-3", "--epochs", "8", "--batch-size", "16", "--max-length", "32", "--output",
                 str(folder / "runs"), "--name", "re", "--seed", "0"])
    assert code == 0
    return folder


def test_training_beats_the_untuned_probe_and_the_folder_loads_in_transformers_alone(trained):
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    run = Run(trained / "runs" / "re")
    metrics = json.loads(run.metrics_file.read_text())
    assert metrics["test"]["micro_f1"] > 0.8, metrics["test"]
    assert metrics["test"]["micro_f1"] > metrics["baseline"]["micro_f1"] + 0.1, metrics["baseline"]
    card = (run.model_dir / "README.md").read_text(encoding="utf-8")
    assert "@ * type * head @" in card and "tunesmith_markers" in card
    # The recipe the model card and tasks/marker_pool.py give, with transformers alone.
    folder = str(run.model_dir)
    tokenizer, body = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    head = load_file(f"{folder}/classifier.safetensors")
    texts = run.split("test").texts[:8]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = body(**batch).last_hidden_state
    at = [(batch["input_ids"] == marker).int().argmax(1) for marker in body.config.tunesmith_markers]
    pooled = torch.cat([hidden[torch.arange(len(hidden)), i] for i in at], -1)
    logits = (pooled - head["feature_mean"]) / head["feature_scale"] @ head["weight"].T + head["bias"]
    ours = Predictor.from_run(run).predict(texts)
    assert np.allclose(torch.softmax(logits, -1).numpy(), ours, atol=1e-4)


def test_predict_writes_a_relation_for_every_entity_pair_of_a_file(trained, capsys):
    inputs = _write(trained / "inputs.jsonl", [
        {"text": "bob wrote maps .", "head": {"text": "bob", "type": "person"}, "tail": "maps", "tail_type": "work"},
        {"text": "dee was born in rome .", "spo_list": [{"subject": "dee", "object": "rome", "subject_type": "person",
                                                         "object_type": "place"}]}])
    out = trained / "predicted.jsonl"
    assert main(["predict", str(trained / "runs" / "re"), inputs, "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3  # one pair, then both directions of the DuIE row's two entities
    assert rows[0]["label"] == "author_of" and rows[0]["head"] == {"text": "bob", "start": 0, "end": 3, "type": "person"}
    assert rows[1]["label"] == "born_in" and rows[2]["label"] == "no_relation"


def test_eval_scores_a_new_file_and_names_an_unknown_relation(trained, capsys):
    good = _write(trained / "more.jsonl", duie_rows(20, seed=5))
    assert main(["eval", str(trained / "runs" / "re"), good]) == 0
    assert "micro-F1" in capsys.readouterr().out
    bad = _write(trained / "bad.jsonl", [{"text": "ada wrote notes .", "head": "ada", "tail": "notes",
                                          "relation": "painted"}])
    assert main(["eval", str(trained / "runs" / "re"), bad]) == 2
    assert "'painted'" in capsys.readouterr().err


def test_serving_takes_a_text_with_its_head_and_tail_as_strings_or_spans(trained):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run
    from tunesmith.serve.app import create_app
    from tunesmith.serve.schemas import ClassificationOutput
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    run = Run(trained / "runs" / "re")
    key = {"Authorization": "Bearer " + "k" * 24}
    with TestClient(create_app(Predictor.from_run(run), ServeSettings(run=str(run.path)), KeyRing(["k" * 24]),
                               run_info(run))) as client:
        assert client.get("/v1/model", headers=key).json()["input"] == "relation"
        answer = client.post("/v1/predict", headers=key, json={"inputs": [
            {"text": "cy wrote poems .", "head": {"start": 0, "end": 2, "type": "person"},
             "tail": {"start": 9, "end": 14, "type": "work"}},
            {"text": "cy wrote poems .", "head": {"start": 9, "end": 14, "type": "work"},
             "tail": {"start": 0, "end": 2, "type": "person"}}]})
        assert answer.status_code == 200, answer.text
        first, second = (ClassificationOutput.model_validate(one) for one in answer.json())
        assert first.label == "author_of" and second.label == "no_relation"
        missing = client.post("/v1/predict", headers=key,
                              json={"inputs": [{"text": "cy wrote poems .", "head": "zed", "tail": "poems"}]})
        assert missing.status_code == 422 and "inputs[0]" in missing.json()["error"]
        assert "'zed' does not occur" in missing.json()["error"]
        plain = client.post("/v1/predict", headers=key, json={"inputs": "cy wrote poems"})
        assert plain.status_code == 422 and "head" in plain.json()["error"]


# ---- the real data set ----------------------------------------------------------------------

def test_duie_reads_from_the_source_distribution_when_it_is_there():
    if not (relations.sdist_folder() / relations.DUIE_SDIST).is_file():
        pytest.skip("the casrel-datautils source distribution is not downloaded (make data)")
    sentences = relations.duie()
    assert len(sentences) > 13000
    pairs = [p for s in sentences for p in s.pairs]
    assert len({p.relation for p in pairs}) == 18  # 17 relations occur in this subset, and no_relation
    assert all(s.text[p.head.start:p.head.end] and s.text[p.tail.start:p.tail.end] for s in sentences[:200]
               for p in s.pairs)


def _write(path, rows) -> str:
    return write_jsonl(path, rows)


def _write_json(path, rows) -> str:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return str(path)


def test_check_warns_when_some_pairs_are_typed_and_others_are_not(tmp_path):
    from tunesmith.config import TrainConfig

    rows = flat_rows(60)
    for row in rows[:20]:
        row["head_type"], row["tail_type"] = "person", "thing"
    splits = RE.load_data(TrainConfig(task="relation-extraction", data=_write(tmp_path / "d.jsonl", rows)))
    report = RE.check(splits, None, 32)
    assert 0 < report.facts["typed_pairs"] < len(splits.train)
    assert any("have no entity types" in w and "d.jsonl line" in w for w in report.warnings), report.warnings


def test_compare_scores_relation_runs_by_their_micro_f1(tiny_re_model, tmp_path, capsys):
    data = _write(tmp_path / "d.jsonl", duie_rows(80))
    assert main(["compare", data, "--task", "relation-extraction", "--methods", "lora,full", "--model", tiny_re_model,
                 "--max-steps", "3", "--max-length", "32", "--output-folder", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")
    assert "test micro_f1" in table and "| lora |" in table and "| full |" in table
