"""Real MiniLM on CoNLL-2003 NER, with an entity-F1 floor (skips when the model or data is absent)."""

import json

import pytest

from realdata import needs_dataset, needs_minilm
from tunesmith.cli import main
from tunesmith.data.tagged import read_tagged_file

pytestmark = pytest.mark.integration


def _write(path, sentences):
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in zip(s.words, s.tags)) for s in sentences) + "\n")
    return str(path)


def test_ner_on_conll_subset_beats_floor(tmp_path, capsys):
    needs_minilm()
    conll = needs_dataset("conll2003")
    train = read_tagged_file(conll / "train.txt")[:1000]
    test = read_tagged_file(conll / "test.txt")[:500]
    code = main(["train", "--task", "token-classification", "--data", _write(tmp_path / "train.txt", train),
                 "--val-data", _write(tmp_path / "val.txt", read_tagged_file(conll / "valid.txt")[:300]),
                 "--test-data", _write(tmp_path / "test.txt", test), "--method", "full",
                 "--batch-size", "16", "--epochs", "2", "--output", str(tmp_path / "runs"), "--name", "ner"])
    assert code == 0
    metrics = json.loads((tmp_path / "runs" / "ner" / "metrics.json").read_text())
    assert metrics["test"]["count"] == 500
    # 1,000 sentences, two epochs at NER's default learning rate (2e-4): measured 0.764 entity F1
    # on the first 500 test sentences (seed 42, 2-core AMD EPYC). The full training set, 4 epochs,
    # reaches 0.872 on the whole test set (docs/benchmarks.md).
    assert metrics["test"]["f1"] >= 0.70

    out = tmp_path / "entities.jsonl"
    (tmp_path / "news.txt").write_text("Angela Merkel met Emmanuel Macron in Paris on Tuesday .\n")
    assert main(["predict", str(tmp_path / "runs" / "ner"), str(tmp_path / "news.txt"), "-o", str(out)]) == 0
    found = {(e["type"], e["text"]) for e in json.loads(out.read_text())["entities"]}
    assert ("LOC", "Paris") in found
