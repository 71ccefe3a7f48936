"""Token classification (NER): tag schemes, sub-word alignment, entity metrics, the CLI lifecycle."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from conftest import interrupt_during_second_evaluation, save_tiny_bert
from tunesmith.cli import main
from tunesmith.data.batching import IGNORE
from tunesmith.data.tagged import detect_scheme, normalise, read_tagged_file, spans, split_words
from tunesmith.errors import UserError
from tunesmith.evaluate.entities import entity_metrics
from tunesmith.tasks import TASKS

NER = TASKS["token-classification"]
PEOPLE = [["john", "smith"], ["mary"], ["peter", "johnson"], ["mary", "jones"]]  # johnson = john ##son
PLACES = [["paris"], ["london"], ["springville"], ["new", "berlin"]]  # springville = spring ##ville
COMPANIES = [["acme", "corp"], ["globex"]]
FILLER = ["met", "in", "visited", "works", "at", "the", "today", "and", "said", "."]


def _entity(words: list[str], kind: str) -> list[tuple[str, str]]:
    return [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]


def make_sentences(n: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    templates = [
        lambda: _entity(rng.choice(PEOPLE), "PER") + [("visited", "O")] + _entity(rng.choice(PLACES), "LOC") + [(".", "O")],
        lambda: _entity(rng.choice(PEOPLE), "PER") + [("works", "O"), ("at", "O")] + _entity(rng.choice(COMPANIES), "ORG")
        + [("in", "O")] + _entity(rng.choice(PLACES), "LOC"),
        lambda: [("today", "O")] + _entity(rng.choice(PEOPLE), "PER") + [("met", "O")] + _entity(rng.choice(PEOPLE), "PER"),
        lambda: _entity(rng.choice(COMPANIES), "ORG") + [("said", "O"), ("the", "O")] + _entity(rng.choice(PLACES), "LOC")
        + [(".", "O")],
    ]
    return [rng.choice(templates)() for _ in range(n)]


def write_conll(path, sentences, docstart: bool = True) -> str:
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for sentence in sentences:
        lines += [f"{word} NN O {tag}" for word, tag in sentence] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def tiny_ner_model(tmp_path_factory) -> str:
    """A 2-layer BERT whose WordPiece vocabulary splits some words (johnson, springville)."""
    folder = tmp_path_factory.mktemp("tiny-ner-bert")
    words = sorted({w for group in PEOPLE + PLACES + COMPANIES for w in group} | set(FILLER)
                   - {"johnson", "springville"}) + ["spring", "##son", "##ville"]
    vocab = save_tiny_bert(folder, words)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")  # for the pure-Python tokenizer
    return str(folder)


# ---- tag schemes ---------------------------------------------------------------------

def test_iob1_is_converted_silently_and_bio_mistakes_are_repaired_with_a_warning(tmp_path):
    iob1 = tmp_path / "iob1.txt"
    iob1.write_text("John I-PER\nSmith I-PER\nmet O\nMary I-PER\nAnn B-PER\n\nParis I-LOC\n", encoding="utf-8")
    sentences = read_tagged_file(iob1)
    assert detect_scheme(sentences) == "iob1"
    assert normalise(sentences, "iob1") == []
    assert sentences[0].tags == ["B-PER", "I-PER", "O", "B-PER", "B-PER"]  # Ann starts a second entity
    assert sentences[1].tags == ["B-LOC"]

    bio = tmp_path / "bio.txt"
    bio.write_text("John B-PER\nSmith I-PER\nin O\nParis I-LOC\n", encoding="utf-8")
    sentences = read_tagged_file(bio)
    assert detect_scheme(sentences) == "bio"
    warnings = normalise(sentences, "bio")
    assert sentences[0].tags == ["B-PER", "I-PER", "O", "B-LOC"]
    assert len(warnings) == 1 and f"{bio} line 4" in warnings[0]


def test_bad_tag_and_bad_line_name_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("John B-PER\nSmith PERSON\n", encoding="utf-8")
    assert main(["check", str(bad), "--task", "token-classification"]) == 2
    assert f"{bad} line 2: tag 'PERSON' is not O, B-TYPE or I-TYPE" in capsys.readouterr().err
    bad.write_text("John B-PER\nSmith\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 2: expected a word and its tag"):
        read_tagged_file(bad)


def test_jsonl_tokens_and_tags(tmp_path):
    path = tmp_path / "ner.jsonl"
    path.write_text(json.dumps({"tokens": ["John", "lives"], "tags": ["B-PER", "O"]}) + "\n"
                    + json.dumps({"tokens": ["x"], "tags": ["O", "O"]}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 2: 1 tokens but 2 tags"):
        read_tagged_file(path)


# ---- spans and metrics -----------------------------------------------------------------

def test_spans_follow_conlleval_rules():
    assert spans(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG"]) == [
        ("PER", 0, 2), ("LOC", 3, 5), ("LOC", 5, 6), ("ORG", 6, 7)]


def test_entity_metrics_are_strict_span_matches():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "B-LOC"]]
    m = entity_metrics(gold, pred)
    # gold: PER(0,2) LOC(3,4) ORG(0,1); predicted: PER(0,1) LOC(3,4) ORG(0,1) LOC(1,2).
    # True positives: LOC, ORG (the PER is one word short, so it counts as wrong).
    assert m["precision"] == pytest.approx(2 / 4) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["per_class"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["LOC"]["precision"] == 0.5 and m["per_class"]["LOC"]["recall"] == 1.0
    assert m["accuracy"] == pytest.approx(4 / 6)


# ---- sub-word alignment ----------------------------------------------------------------

class LookupTagger(torch.nn.Module):
    """A stand-in model: the logits of a token are a fixed row per token id."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table)
        self.config = type("Config", (), {"num_labels": table.shape[1]})()

    def forward(self, input_ids, attention_mask=None, **_):
        return type("Out", (), {"logits": self.table[input_ids]})()


@pytest.mark.parametrize("slow", [False, True], ids=["fast-tokenizer", "slow-tokenizer"])
def test_alignment_round_trip_on_sub_word_splits_and_windows(tiny_ner_model, slow):
    from transformers import AutoTokenizer, BertTokenizerLegacy

    if slow:
        tokenizer = BertTokenizerLegacy(vocab_file=f"{tiny_ner_model}/vocab.txt")
    else:
        tokenizer = AutoTokenizer.from_pretrained(tiny_ner_model)
    sentences = make_sentences(40, seed=1)
    words = [[w for w, _ in s] for s in sentences]
    tags = [[t for _, t in s] for s in sentences]
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert any("johnson" in w or "springville" in w for w in words)  # sub-word splits are exercised

    features = NER.encode(tokenizer, words, tags, labels, max_length=7, use_cache=False)
    assert len(features) > len(words)  # max_length 7 forces windows
    recovered: dict[int, list[str]] = {}
    for row, meta in zip(features.rows, features.meta):
        assert len(row["input_ids"]) <= 7
        labelled = [i for i, y in enumerate(row["labels"]) if y != IGNORE]
        assert labelled == meta["positions"]  # exactly the first sub-word of each word
        assert row["input_ids"][0] == tokenizer.cls_token_id and row["input_ids"][-1] == tokenizer.sep_token_id
        recovered.setdefault(meta["sentence"], []).extend(labels[row["labels"][p]] for p in meta["positions"])
    assert [recovered[i] for i in range(len(words))] == tags

    # Predictions map back to words: a model that tags by the first sub-word's id reproduces the gold tags.
    table = torch.full((tokenizer.vocab_size, len(labels)), -5.0)
    for sentence_words, sentence_tags in zip(words, tags):
        for word, tag in zip(sentence_words, sentence_tags):
            first = tokenizer(word, add_special_tokens=False)["input_ids"][0]
            table[first, labels.index(tag)] = 5.0
    unlabelled = NER.encode(tokenizer, words, None, labels, max_length=7, use_cache=False)
    outputs = NER.predict(LookupTagger(table), unlabelled)
    assert [len(o) for o in outputs] == [len(w) for w in words]
    assert NER.metrics(tags, outputs, labels)["f1"] == 1.0


def test_raw_text_words_and_entity_offsets():
    from tunesmith.tasks.token_classification import entities

    text = "John Smith visited the U.S. today."
    words, offsets = split_words(text)
    assert words == ["John", "Smith", "visited", "the", "U.S", ".", "today", "."]
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O", "O"]
    probs = np.full((len(words), 3), 0.1)
    probs[:, 0] = 0.8
    found = entities(text, tags, probs)
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in found] == [("PER", "John Smith", 0, 10), ("LOC", "U.S", 23, 26)]
    assert text[found[0]["start"] : found[0]["end"]] == "John Smith"


# ---- the CLI lifecycle ------------------------------------------------------------------

def _ner_args(data, model, out, name, *extra):
    return ["train", "--task", "token-classification", "--data", data, "--model", model, "--output", str(out),
            "--name", name, "--max-length", "16", "--batch-size", "8", "--epochs", "6", "--lr", "3e-3",
            "--method", "full", "--seed", "0", *extra]


@pytest.fixture(scope="module")
def ner_run(tiny_ner_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("ner")
    data = write_conll(base / "train.txt", make_sentences(240))
    assert main(_ner_args(data, tiny_ner_model, base / "runs", "r")) == 0
    return base / "runs" / "r"


def test_ner_trains_to_high_entity_f1_and_loads_in_plain_transformers(ner_run):
    from transformers import AutoModelForTokenClassification

    metrics = json.loads((ner_run / "metrics.json").read_text())
    assert metrics["test"]["f1"] > 0.9, metrics["test"]
    assert set(metrics["test"]["per_class"]) == {"PER", "LOC", "ORG"}
    assert metrics["baseline"] is None
    config = (ner_run / "config.yaml").read_text()
    assert "metric: f1" in config
    model = AutoModelForTokenClassification.from_pretrained(str(ner_run / "model"))
    assert model.config.id2label[0] == "O" and model.config.num_labels == 7
    html = (ner_run / "report.html").read_text()
    assert "PER" in html and "<td>f1</td>" in html


def test_ner_predict_gives_entities_with_character_offsets(ner_run, tmp_path, capsys):
    texts = tmp_path / "texts.csv"
    texts.write_text("id,text\n1,John Smith visited Paris.\n2,Acme Corp said the London .\n3,\n", encoding="utf-8")
    out = tmp_path / "entities.jsonl"
    assert main(["predict", str(ner_run), str(texts), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["1", "2", "3"] and rows[2]["entities"] == []
    first = {(e["type"], e["text"], e["start"], e["end"]) for e in rows[0]["entities"]}
    assert first == {("PER", "John Smith", 0, 10), ("LOC", "Paris", 19, 24)}
    assert {(e["type"], e["text"]) for e in rows[1]["entities"]} == {("ORG", "Acme Corp"), ("LOC", "London")}

    conll = tmp_path / "new.conll"
    write_conll(conll, [[("mary", "O"), ("visited", "O"), ("london", "O")]], docstart=False)
    out_csv = tmp_path / "entities.csv"
    assert main(["predict", str(ner_run), str(conll), "-o", str(out_csv)]) == 0
    import pandas as pd

    frame = pd.read_csv(out_csv)
    assert frame.loc[0, "text"] == "mary visited london"
    words_only = tmp_path / "words.conll"
    words_only.write_text("mary\nvisited\nlondon\n", encoding="utf-8")  # CoNLL without a tag column
    assert main(["predict", str(ner_run), str(words_only), "-o", str(tmp_path / "w.jsonl")]) == 0
    assert json.loads((tmp_path / "w.jsonl").read_text())["text"] == "mary visited london"
    assert {(e["type"], e["text"]) for e in json.loads(frame.loc[0, "entities"])} == {("PER", "mary"), ("LOC", "london")}


def test_ner_eval_on_a_new_file_and_unknown_tags(ner_run, tmp_path, capsys):
    data = write_conll(tmp_path / "more.txt", make_sentences(30, seed=5))
    assert main(["eval", str(ner_run), data]) == 0
    assert "entity F1" in capsys.readouterr().out
    bad = write_conll(tmp_path / "bad.txt", [[("mary", "B-PER"), ("x", "B-DATE")]])
    assert main(["eval", str(ner_run), bad]) == 2
    assert "not trained on: B-DATE" in capsys.readouterr().err


def test_ner_check_reports_leakage_long_sentences_and_unseen_types(tmp_path, tiny_ner_model, capsys):
    train = make_sentences(50)
    long = [("the", "O")] * 30 + [("paris", "B-LOC")]
    data = write_conll(tmp_path / "train.txt", train + [long])
    test = write_conll(tmp_path / "test.txt", train[:5])
    assert main(["check", data, "--task", "token-classification", "--test-data", test, "--model", tiny_ner_model,
                 "--max-length", "16"]) == 0
    out = capsys.readouterr().out
    assert "5 test sentences (of more than 3 words) also appear in train" in out
    assert "1 sentences are longer than max_length 16 sub-words" in out
    assert main(["check", data, "--task", "token-classification", "--val-data", str(tmp_path / "nope.txt")]) == 2
    assert f"{tmp_path / 'nope.txt'}: file not found; check the path" in capsys.readouterr().err
    unseen = write_conll(tmp_path / "unseen.txt", [[("x", "B-DATE")]])
    assert main(["check", data, "--task", "token-classification", "--test-data", unseen]) == 2
    assert "test entity types never seen in training: DATE" in capsys.readouterr().err


def test_ner_lora_run_interrupted_then_resumed_matches_a_straight_run(tiny_ner_model, tmp_path, monkeypatch):
    data = write_conll(tmp_path / "train.txt", make_sentences(120))
    common = ("--method", "lora", "--lora-r", "4", "--eval-every", "4", "--epochs", "2")
    assert main(_ner_args(data, tiny_ner_model, tmp_path, "straight", *common)) == 0

    interrupt_during_second_evaluation(monkeypatch, NER, _ner_args(data, tiny_ner_model, tmp_path, "cut", *common))
    assert not (tmp_path / "cut" / "metrics.json").exists()
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert resumed["test"] == straight["test"] and resumed["val_best"] == straight["val_best"]
    assert (tmp_path / "cut" / "adapter").is_dir()


def test_chinese_text_is_read_one_character_at_a_time_with_character_offsets():
    import numpy as np

    from tunesmith.data.tagged import split_words
    from tunesmith.tasks.token_classification import entities

    text = "张三在北京大学读书。iPhone手机"
    words, offsets = split_words(text)
    assert words[:10] == list("张三在北京大学读书。") and words[10:] == ["iPhone", "手", "机"]
    tags = ["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "O", "O", "B-MISC", "O", "O"]
    found = entities(text, tags, np.full((len(words), 3), 0.9))
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in found] == [
        ("PER", "张三", 0, 2), ("ORG", "北京大学", 3, 7), ("MISC", "iPhone", 10, 16)]
    assert split_words("don't U.S 1996-08-22")[0] == ["don't", "U.S", "1996-08-22"]  # Latin words as before
