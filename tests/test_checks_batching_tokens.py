import numpy as np

from conftest import make_rows, split_data as load_splits, write_csv
from tunesmith.data.batching import collate, inference_batches, train_batches
from tunesmith.data.checks import check_splits
from tunesmith.data import tokens


def test_check_reports_duplicates_leakage_empty_and_truncation(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    rows = make_rows(20)
    train = rows + [rows[0], {"text": "   ", "label": "neutral"}]
    test = [rows[1], rows[2]] + make_rows(3, seed=9)
    splits = load_splits(write_csv(tmp_path / "train.csv", train), val_data=write_csv(tmp_path / "val.csv", make_rows(2, 5)),
                         test_data=write_csv(tmp_path / "test.csv", test))
    report = check_splits(splits, AutoTokenizer.from_pretrained(tiny_model), max_length=5)
    text = "\n".join(report.warnings)
    assert "rows repeat an earlier text" in text
    assert "empty or whitespace-only" in text
    leaked = sum(t in set(splits.train.texts) for t in splits.test.texts)
    assert leaked >= 1 and report.facts["train_test_overlap"] == leaked
    assert f"{leaked} test texts also appear in train" in text
    lengths = report.facts["token_lengths"]
    assert lengths["truncated"] > 0 and lengths["max"] > 5
    assert report.facts["label_counts"] and report.facts["imbalance_ratio"] >= 1.0


def test_train_batches_cover_everything_once_and_replay_exactly():
    lengths = list(np.random.default_rng(0).integers(2, 60, size=1000))
    batches = train_batches(lengths, 16, seed=3, epoch=2)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert batches == train_batches(lengths, 16, seed=3, epoch=2)  # pure function of (seed, epoch)
    assert batches != train_batches(lengths, 16, seed=3, epoch=3)


def test_length_grouping_cuts_padding():
    lengths = np.random.default_rng(0).integers(2, 60, size=2000)
    grouped = sum(len(b) * max(lengths[b]) for b in train_batches(list(lengths), 32, 0, 0))
    order = np.random.default_rng(1).permutation(2000)
    plain = sum(len(b) * max(lengths[b]) for b in np.array_split(order, 2000 // 32))
    assert grouped < 0.75 * plain


def test_inference_batches_longest_first():
    batches = inference_batches([3, 9, 1, 5], 2)
    assert batches == [[1, 3], [0, 2]]


def test_collate_pads_dynamically():
    batch = collate([[5, 6, 7], [8]], pad_id=0, labels=[1, 0])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_tokenisation_is_cached(tiny_model, monkeypatch, tmp_path):
    from transformers import AutoTokenizer

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "c"))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["good movie", "bad plot and actor", "fine"]
    first = tokens.tokenize(tok, texts, 16)
    calls = []
    original = type(tok).__call__
    monkeypatch.setattr(type(tok), "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    assert tokens.tokenize(tok, texts, 16) == first
    assert calls == []  # served from the cache, no tokenizer call
    tokens.tokenize(tok, texts, 8)  # another max_length is another entry
    assert calls == [1]


def test_check_warns_when_the_tokenizer_cannot_read_the_text(tmp_path, tiny_model, capsys):
    import json

    from tunesmith.cli import main

    rows = [{"text": f"这部电影真的很好看 {i}" if i % 2 else f"good movie {i}", "label": "a" if i % 2 else "b"}
            for i in range(40)]
    data = write_csv(tmp_path / "zh.csv", rows)
    assert main(["check", data, "--model", tiny_model, "--no-quality", "--json"]) == 0
    out = capsys.readouterr().out
    facts = json.loads(out)
    # The tiny English vocabulary knows none of the Chinese characters: half the rows are [UNK] only.
    assert facts["facts"]["unknown_token_pct"] > 30
    assert any("unknown to the model's tokenizer" in w for w in facts["warnings"])


def test_check_finds_duplicates_that_differ_only_in_width_case_or_traditional_characters(tmp_path, tiny_model):
    import pytest

    pytest.importorskip("opencc", reason="traditional/simplified folding needs opencc-python-reimplemented")
    train = [{"text": t, "label": l} for t, l in [("酒店房間乾淨", "pos"), ("good movie", "pos"), ("bad plot", "neg"),
                                                  ("ＢＡＤ　ＰＬＯＴ", "neg"), ("awful", "neg"), ("great", "pos")]]
    test = [{"text": t, "label": l} for t, l in [("酒店房间干净", "pos"), ("GOOD  movie", "pos"), ("fine", "pos")]]
    val = [{"text": "terrible", "label": "neg"}, {"text": "nice", "label": "pos"}]
    splits = load_splits(write_csv(tmp_path / "train.csv", train), write_csv(tmp_path / "val.csv", val),
                         write_csv(tmp_path / "test.csv", test))
    report = check_splits(splits)
    assert report.facts["train_test_overlap"] == 0  # no exact copies ...
    assert report.facts["train_test_overlap_folded"] == 2  # ... but two in another form
    assert any("2 test texts appear in train in another form" in w for w in report.warnings)
    assert any(w.startswith("train: 1 more rows repeat an earlier text once width") for w in report.warnings)
