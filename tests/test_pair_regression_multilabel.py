"""Text pairs, regression and multi-label: targets, metrics against known values, the CLI lifecycle."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

from conftest import CUES, FILLER, train_tiny_run
from tunesmith.cli import main
from tunesmith.data.targets import LabelSetTarget, NumberTarget
from tunesmith.errors import UserError
from tunesmith.tasks.multi_label import multilabel_metrics, tune_thresholds
from tunesmith.tasks.regression import regression_metrics

SCORE = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}


def _sentence(rng, cls) -> str:
    words = rng.sample(FILLER, rng.randint(1, 3)) + rng.sample(CUES[cls], 2)
    rng.shuffle(words)
    return " ".join(words)


def _write(path, rows, fields) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _args(data, model, out, name, task, *extra):
    return ["train", "--task", task, "--data", data, "--model", model, "--output", str(out), "--name", name,
            "--max-length", "24", "--batch-size", "8", "--epochs", "6", "--lr", "3e-3", "--method", "full",
            "--no-baseline", "--seed", "0", *extra]


# ---- targets and metrics -------------------------------------------------------------------

def test_label_sets_parse_json_lists_and_separated_strings():
    target = LabelSetTarget("|")
    assert target.parse('["b", "a", "a"]', "f row 1", "labels") == ("a", "b")
    assert target.parse("sports| politics", "f row 1", "labels") == ("politics", "sports")
    assert target.parse("", "f row 1", "labels") == ()
    assert LabelSetTarget(",").parse("x,y", "f row 1", "labels") == ("x", "y")


def test_non_numeric_regression_target_names_the_row():
    with pytest.raises(UserError, match="data.csv row 3: 'high' in column 'score' is not a number"):
        NumberTarget().parse("high", "data.csv row 3", "score")


def test_regression_metrics_against_known_values():
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0])
    assert m["mse"] == pytest.approx(0.25) and m["mae"] == pytest.approx(0.25) and m["rmse"] == pytest.approx(0.5)
    assert m["pearson"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1, 2, 3, 5])[0, 1])
    assert m["spearman"] == pytest.approx(1.0)  # the order is perfect even though the values are not
    assert m["r2"] == pytest.approx(1 - 0.25 / 1.25)


def test_thresholds_are_tuned_per_label():
    rng = np.random.default_rng(0)
    y = np.zeros((200, 2), dtype=bool)
    y[:, 0] = rng.random(200) < 0.5
    y[:20, 1] = True  # a rare label whose model is under-confident: positives score 0.2-0.3
    probs = np.where(y, 0.0, 0.0)
    probs[:, 0] = np.where(y[:, 0], 0.8, 0.2)
    probs[:, 1] = np.where(y[:, 1], rng.uniform(0.2, 0.3, 200), rng.uniform(0.0, 0.15, 200))
    thresholds = tune_thresholds(y, probs)
    assert 0.15 < thresholds[1] <= 0.2  # well below 0.5: at 0.5 the rare label would never be predicted
    assert 0.2 < thresholds[0] <= 0.8
    tuned = multilabel_metrics(y, probs >= thresholds, ["common", "rare"], thresholds)
    fixed = multilabel_metrics(y, probs >= 0.5, ["common", "rare"], [0.5, 0.5])
    assert tuned["per_class"]["rare"]["f1"] == 1.0 and fixed["per_class"]["rare"]["f1"] == 0.0
    assert tuned["micro_f1"] > fixed["micro_f1"] and tuned["subset_accuracy"] == 1.0


def test_multilabel_metrics_against_known_values():
    y = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)
    p = np.array([[1, 0, 0], [0, 1, 1]], dtype=bool)
    m = multilabel_metrics(y, p, ["a", "b", "c"], [0.5] * 3)
    # tp 2 (a, b), predicted 3, gold 3 -> micro F1 2/3; per label F1: a 1, b 1, c 0.
    assert m["micro_f1"] == pytest.approx(2 / 3) and m["macro_f1"] == pytest.approx(2 / 3)
    assert m["subset_accuracy"] == 0.0 and m["hamming_accuracy"] == pytest.approx(4 / 6)


# ---- end to end with the tiny model ----------------------------------------------------------

def test_regression_learns_a_score_and_predicts_it(tiny_model, tmp_path, capsys):
    rng = random.Random(0)
    rows = []
    for _ in range(60):
        for cls in CUES:
            rows.append({"text": _sentence(rng, cls), "score": SCORE[cls] + rng.uniform(-0.1, 0.1)})
    data = _write(tmp_path / "scores.csv", rows, ["text", "score"])
    assert main(["check", data, "--task", "regression", "--label-col", "score", "--lists", str(tmp_path / "lists")]) == 0
    assert "target (train): min" in capsys.readouterr().out
    assert main(_args(data, tiny_model, tmp_path, "reg", "regression", "--label-col", "score")) == 0
    metrics = json.loads((tmp_path / "reg" / "metrics.json").read_text())
    assert metrics["test"]["pearson"] > 0.8 and metrics["test"]["rmse"] < 0.5, metrics["test"]
    assert "metric: mse" in (tmp_path / "reg" / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "reg")]) == 0  # rescoring the held-out split gives the same numbers
    assert json.loads((tmp_path / "reg" / "metrics.json").read_text())["test"] == metrics["test"]
    assert "Spearman" in capsys.readouterr().out

    texts = _write(tmp_path / "new.csv", [{"text": "great wonderful film"}, {"text": "awful bad plot"}], ["text"])
    out = tmp_path / "scored.csv"
    assert main(["predict", str(tmp_path / "reg"), texts, "-o", str(out)]) == 0
    scored = list(csv.DictReader(open(out, encoding="utf-8")))
    assert float(scored[0]["score"]) > 0.5 > -0.5 > float(scored[1]["score"])

    bad = _write(tmp_path / "bad.csv", rows[:10] + [{"text": "x", "score": "high"}], ["text", "score"])
    assert main(_args(bad, tiny_model, tmp_path, "bad", "regression", "--label-col", "score")) == 2
    assert "bad.csv row 11: 'high' in column 'score' is not a number" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_pair_classification_uses_segments_and_ranks_candidates(tiny_model, tmp_path):
    rng = random.Random(1)
    rows = []
    for _ in range(150):
        a, b = rng.choice(list(CUES)), rng.choice(list(CUES))
        rows.append({"question1": _sentence(rng, a), "question2": _sentence(rng, b), "label": "1" if b == "positive" else "0"})
    data = _write(tmp_path / "pairs.csv", rows, ["question1", "question2", "label"])
    assert main(_args(data, tiny_model, tmp_path, "pairs", "text-pair-classification")) == 0
    run = tmp_path / "pairs"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.85, metrics["test"]
    assert "text_pair_col: question2" in (run / "config.yaml").read_text()
    saved = json.loads((run / "data" / "train.jsonl").read_text().splitlines()[0])
    assert isinstance(saved["text"], list) and len(saved["text"]) == 2
    assert main(["eval", str(run), data]) == 0  # a new file: pairs read through the recorded column
    assert json.loads((run / "eval" / "pairs" / "metrics.json").read_text())["test"]["count"] == 150

    from transformers import AutoTokenizer

    from tunesmith.tasks import TASKS

    features = TASKS["text-pair-classification"].encode(AutoTokenizer.from_pretrained(tiny_model), [("good film", "bad")],
                                                          None, ["0", "1"], 24, use_cache=False)
    assert features.rows[0]["token_type_ids"] == [0, 0, 0, 0, 1, 1]  # [CLS] good film [SEP] | bad [SEP]

    candidates = [{"question1": "the user likes films", "question2": t} for t in
                  ("awful bad movie", "great wonderful movie", "okay plain movie")]
    candidates += [{"question1": "another user", "question2": t} for t in ("sad terrible", "happy good")]
    path = _write(tmp_path / "candidates.csv", candidates, ["question1", "question2"])
    out = tmp_path / "ranked.csv"
    assert main(["predict", str(run), path, "-o", str(out), "--rank"]) == 0
    ranked = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [r["question1"] for r in ranked] == ["the user likes films"] * 3 + ["another user"] * 2
    assert [r["rank"] for r in ranked] == ["1", "2", "3", "1", "2"]
    assert ranked[0]["question2"] == "great wonderful movie" and ranked[3]["question2"] == "happy good"
    assert [float(r["score_1"]) for r in ranked[:3]] == sorted((float(r["score_1"]) for r in ranked[:3]), reverse=True)


def test_rank_on_a_single_text_run_is_refused(tiny_model, tmp_path, capsys):
    run = train_tiny_run(tmp_path, tiny_model)
    assert main(["predict", str(run), str(tmp_path / "toy.csv"), "-o", str(tmp_path / "x.csv"), "--rank"]) == 2
    assert "--rank" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_multilabel_tunes_thresholds_on_validation_and_saves_them(tiny_model, tmp_path):
    rng = random.Random(2)
    rows = []
    for _ in range(240):
        present = rng.sample(list(CUES), rng.choice([1, 1, 2]))
        words = [w for cls in present for w in rng.sample(CUES[cls], 1)] + rng.sample(FILLER, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": json.dumps(sorted(present))})
    data = _write(tmp_path / "multi.csv", rows, ["text", "labels"])
    assert main(_args(data, tiny_model, tmp_path, "multi", "multi-label-classification", "--epochs", "10", "--lr", "1e-3")) == 0
    run = tmp_path / "multi"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["micro_f1"] > 0.85, metrics["test"]
    thresholds = metrics["tuned_on_validation"]["thresholds"]
    assert set(thresholds) == set(CUES)
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert main(["eval", str(run)]) == 0  # eval decides with the saved thresholds: same numbers
    assert json.loads((run / "metrics.json").read_text())["test"] == metrics["test"]
    assert config["tunesmith_thresholds"] == [thresholds[label] for label in sorted(CUES)]

    texts = _write(tmp_path / "new.csv", [{"text": "good sad film"}, {"text": "okay"}], ["text"])
    out = tmp_path / "labels.jsonl"
    assert main(["predict", str(run), texts, "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[1]["labels"] == "neutral"
    assert rows[0]["labels"] and set(rows[0]["labels"].split("|")) <= {"negative", "positive"}
    for row in rows:  # the labels column is exactly the scores over their tuned thresholds
        chosen = {label for label in CUES if row[f"score_{label}"] >= thresholds[label]}
        assert chosen == set(row["labels"].split("|"))
