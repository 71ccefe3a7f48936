"""Label errors the frozen probe misses: training dynamics recorded during `train`
(quality/dynamics.py) and `check --deep`'s fine-tuned out-of-fold judges (commands/deep_labels.py)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_rows, write_csv

from tunesmith.cli import main
from tunesmith.quality.dynamics import Dynamics

SWAP = {"negative": "positive", "positive": "neutral", "neutral": "negative"}


def test_area_under_the_margin_by_hand():
    dynamics = Dynamics([0, 1, 2], n_classes=3, epochs=2)
    dynamics.logits[0] = [[2, 0, 1], [3, 1, 0], [0, 0, 1]]
    dynamics.logits[1] = [[4, 1, 1], [np.nan] * 3, [0, 2, 1]]  # row 1 not trained on in epoch 2
    margins = dynamics.margins()
    assert margins[:, 0].tolist() == [1, 3]  # given class 0: 2 - 1, then 4 - 1
    assert margins[0, 1] == -2 and np.isnan(margins[1, 1])  # class 1 at 1 against 3
    assert dynamics.aum().tolist() == pytest.approx([2.0, -2.0, 0.0])  # row 2: (1 - 0 + -1) / 2
    suspects = dynamics.suspects()
    assert [(s.row, s.given, s.suggested) for s in suspects] == [(1, 1, 0)]  # only a negative AUM is flagged


class _Toy(torch.nn.Module):
    def forward(self, x):
        return SimpleNamespace(logits=x)


def test_only_the_announced_training_pass_is_recorded():
    dynamics = Dynamics([0, 1, 0], n_classes=2, epochs=2)
    model = _Toy()
    handle = dynamics.attach(model)
    model(torch.tensor([[5.0, 0.0]] * 2))  # an evaluation pass: nothing announced
    assert np.isnan(dynamics.logits).all()
    with dynamics.watching([2, 0], epoch=1):
        model(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model(torch.tensor([[9.0, 9.0], [9.0, 9.0]]))  # a second (perturbed) pass of the same rows
    handle.remove()
    assert dynamics.logits[1, 2].tolist() == [1.0, 2.0] and dynamics.logits[1, 0].tolist() == [3.0, 4.0]
    assert np.isnan(dynamics.logits[0]).all() and np.isnan(dynamics.logits[1, 1]).all()


def test_a_recording_saves_and_reloads_only_into_the_same_run(tmp_path):
    dynamics = Dynamics([0, 1], n_classes=2, epochs=1)
    dynamics.logits[0] = [[1, 0], [0, 1]]
    dynamics.save(tmp_path)
    resumed = Dynamics([0, 1], n_classes=2, epochs=1)
    resumed.load(tmp_path)
    assert resumed.logits.tolist() == [[[1, 0], [0, 1]]]
    other = Dynamics([1, 1], n_classes=2, epochs=1)  # other labels: not this run's recording
    other.load(tmp_path)
    assert np.isnan(other.logits).all()
    assert Dynamics.read(tmp_path).targets.tolist() == [0, 1]


def test_dynamics_need_one_class_per_row():
    scores = SimpleNamespace(rows=[{"labels": 0.5}, {"labels": 1.5}])
    assert Dynamics.for_run(scores, 1, total_steps=4, steps_per_epoch=2) is None
    classes = SimpleNamespace(rows=[{"labels": 0}, {"labels": 1}, {"labels": 1}])
    assert Dynamics.for_run(classes, 2, total_steps=5, steps_per_epoch=2).logits.shape == (3, 3, 2)


def _swapped(tmp_path, n_per_class=30, swapped=6):
    rows = make_rows(n_per_class, seed=3)
    for row in rows[:swapped]:
        row["label"] = SWAP[row["label"]]
    test = write_csv(tmp_path / "test.csv", make_rows(5, seed=4))
    return write_csv(tmp_path / "train.csv", rows), test, rows


def test_train_lists_the_labels_training_fought(tmp_path, tiny_sentence_model):
    data, test, rows = _swapped(tmp_path)
    assert main(["train", "--data", data, "--test-data", test, "--model", tiny_sentence_model, "--method", "full",
                 "--lr", "3e-3", "--epochs", "8", "--max-length", "16", "--output", str(tmp_path / "runs"),
                 "--name", "r", "--no-baseline"]) == 0
    quality = tmp_path / "runs" / "r" / "quality"
    with open(quality / "training_suspect_labels.csv", encoding="utf-8") as f:
        flagged = list(csv.DictReader(f))
    train_rows = [json.loads(line) for line in (tmp_path / "runs" / "r" / "data" / "train.jsonl").read_text().splitlines()]
    swapped_texts = {row["text"] for row in rows[:6]}
    hits = sum(row["text"] in swapped_texts for row in flagged)
    present = sum(row["text"] in swapped_texts for row in train_rows)  # some went to validation
    # Observed: 5 of the 6 swapped rows flagged, and nothing else; the floors leave room for seeds.
    assert hits >= 0.6 * present and hits >= 0.6 * len(flagged)
    facts = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())["data_quality"]
    assert facts["training_suspect_labels"]["count"] == len(flagged)
    # The probe ran before training: rows both flag come first, and are counted.
    agrees = [row["probe_agrees"] == "True" for row in flagged]
    assert agrees == sorted(agrees, reverse=True) and facts["training_suspect_labels"]["probe_agrees"] == sum(agrees)
    assert Dynamics.read(quality).logits.shape[1] == len(train_rows)
    assert "training_suspect_labels.csv" in (tmp_path / "runs" / "r" / "report.html").read_text()


def test_check_deep_judges_with_fine_tuned_folds(tmp_path, tiny_sentence_model, capsys):
    data, _, rows = _swapped(tmp_path)
    assert main(["check", data, "--model", tiny_sentence_model, "--max-length", "16", "--deep", "--method", "full",
                 "--lr", "3e-3", "--epochs", "8",
                 "--lists", str(tmp_path / "lists"), "--json"]) == 0
    out = capsys.readouterr()
    assert "check --deep: 3 fine-tuned runs" in out.err  # the cost, said before the runs, off stdout
    facts = json.loads(out.out)["facts"]["quality"]["suspect_labels"]
    assert facts["judge"].startswith("a model fine-tuned")
    with open(tmp_path / "lists" / "suspect_labels.csv", encoding="utf-8") as f:
        flagged = [row["text"] for row in csv.DictReader(f)]
    swapped_texts = {row["text"] for row in rows[:6]}
    hits = len(set(flagged) & swapped_texts)
    assert hits >= 0.5 * len(flagged) and hits >= 0.5 * len(swapped_texts)  # observed: 4 of 5 flags, 4 of 6 swaps


def test_check_deep_needs_the_quality_checks(tmp_path, tiny_sentence_model, capsys):
    data, _, _ = _swapped(tmp_path)
    assert main(["check", data, "--model", tiny_sentence_model, "--deep", "--no-quality"]) == 2
    assert "--deep judges labels" in capsys.readouterr().err
