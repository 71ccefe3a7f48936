"""Continual learning: `train --from RUN` extends the head without touching the old rows,
replays old examples, and EWC lowers forgetting on a constructed two-task problem."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from conftest import make_rows, train_args, write_csv
from tunesmith.cli import main
from tunesmith.data.labeled import Examples
from tunesmith.errors import UserError
from tunesmith.train.continual import EWC, extend_head, extended_labels, with_replay


def test_new_labels_come_after_the_old_ones():
    assert extended_labels(["b", "a"], ["a", "c", "b", "d"]) == ["b", "a", "c", "d"]


def test_extending_the_head_keeps_the_old_rows_and_their_outputs(tiny_model):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).eval()
    ids = torch.tensor([[2, 7, 9, 3]])
    before = model(input_ids=ids).logits
    extend_head(model, ["a", "b"], ["a", "b", "c"])
    after = model(input_ids=ids).logits
    assert after.shape == (1, 3) and torch.allclose(after[:, :2], before)
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"} and model.num_labels == 3


def test_replay_mixes_a_fixed_share_of_old_examples_deterministically():
    new = Examples([f"new {i}" for i in range(10)], ["n"] * 10, "new")
    old = Examples([f"old {i}" for i in range(100)], ["o"] * 100, "old")
    mixed = with_replay(new, old, 0.5, seed=1)
    assert mixed.texts[:10] == new.texts and len(mixed) == 15 and set(mixed.texts[10:]) <= set(old.texts)
    assert with_replay(new, old, 0.5, seed=1).texts == mixed.texts
    assert len(with_replay(new, Examples(["o1"], ["o"], "old"), 5.0, seed=1)) == 11  # capped at what exists


class TwoLayer(torch.nn.Module):
    """A body (shared features) and a head, shaped like a transformers model for EWC."""

    base_model_prefix = "body"

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh())
        self.head = torch.nn.Linear(16, 2)

    def forward(self, x, labels=None):
        logits = self.head(self.body(x))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SimpleNamespace(logits=logits, loss=loss)


class Tensors:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def batch(self, indices):
        return {"x": self.x[indices], "labels": self.y[indices]}


def _two_tasks():
    # Task A's label is the sign of x0, task B's the sign of x1: one head must serve both,
    # so learning B freely overwrites A.
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(256, 4, generator=g), torch.randn(256, 4, generator=g)
    return Tensors(xa, (xa[:, 0] > 0).long()), Tensors(xb, (xb[:, 1] > 0).long())


def _train(model, data, steps, loss_fn=None):
    loss_fn = loss_fn or (lambda m, b: (m(**b).loss, {}))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss, _ = loss_fn(model, data.batch(torch.arange(len(data))))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _accuracy(model, data) -> float:
    with torch.no_grad():
        return float((model(data.x).logits.argmax(-1) == data.y).float().mean())


def test_ewc_penalty_is_zero_at_the_old_weights_and_grows_with_important_moves():
    task_a, _ = _two_tasks()
    torch.manual_seed(0)
    model = TwoLayer()
    _train(model, task_a, 100)
    ewc = EWC(model, task_a, lam=10.0)
    assert float(ewc.penalty()) == 0.0
    assert all((f >= 0).all() for f in ewc.fisher.values()) and any(f.sum() > 0 for f in ewc.fisher.values())
    with torch.no_grad():
        model.body[0].weight.add_(0.1)
    assert float(ewc.penalty()) > 0


def test_ewc_lowers_forgetting_on_a_two_task_problem():
    task_a, task_b = _two_tasks()
    results = {}
    for lam in (0.0, 1000.0):
        torch.manual_seed(0)
        model = TwoLayer()
        _train(model, task_a, 150)
        learned = _accuracy(model, task_a)
        ewc = EWC(model, task_a, lam=lam)
        _train(model, task_b, 150, ewc.loss(lambda m, b: (m(**b).loss, {})))
        results[lam] = learned - _accuracy(model, task_a)
    assert learned > 0.95
    assert results[1000.0] < results[0.0] - 0.1, results  # forgetting drops by more than 10 points


def test_train_from_a_run_extends_labels_replays_and_reports_forgetting(tmp_path, tiny_model):
    rows = make_rows(30)
    old_csv = write_csv(tmp_path / "old.csv", [r for r in rows if r["label"] != "positive"])
    new_csv = write_csv(tmp_path / "new.csv", [r for r in rows if r["label"] != "negative"])
    assert main(train_args(old_csv, tiny_model, tmp_path, "old", "--method", "full", "--epochs", "3")) == 0
    assert main(train_args(new_csv, tiny_model, tmp_path, "new", "--from", str(tmp_path / "old"), "--method", "full",
                           "--epochs", "2", "--replay", "0.5", "--ewc-lambda", "100")) == 0
    old_labels = json.loads((tmp_path / "old" / "labels.json").read_text())
    labels = json.loads((tmp_path / "new" / "labels.json").read_text())
    assert labels == old_labels + ["positive"]
    metrics = json.loads((tmp_path / "new" / "metrics.json").read_text())
    facts = metrics["continual"]
    assert facts["new_labels"] == ["positive"] and facts["replayed"] > 0 and facts["ewc_lambda"] == 100
    old_test = facts["old_test"]
    recorded = json.loads((tmp_path / "old" / "metrics.json").read_text())["test"]
    assert old_test["before"] == recorded[old_test["metric"]]
    assert old_test["forgetting"] == pytest.approx(old_test["before"] - old_test["after"])
    accuracy = old_test["accuracy"]  # beside macro-F1, which the new labels' predictions dilute
    assert accuracy["before"] == recorded["accuracy"]
    assert accuracy["forgetting"] == pytest.approx(accuracy["before"] - accuracy["after"])
    assert "Continual learning" in (tmp_path / "new" / "report.html").read_text()


def test_ewc_without_from_and_with_lora_are_refused(tmp_path, tiny_model, toy_csv):
    assert main(train_args(toy_csv, tiny_model, tmp_path, "x", "--ewc-lambda", "10")) == 2
    assert main(train_args(toy_csv, tiny_model, tmp_path, "old", "--method", "full", "--epochs", "1")) == 0
    assert main(train_args(toy_csv, tiny_model, tmp_path, "y", "--from", str(tmp_path / "old"), "--method", "lora",
                           "--ewc-lambda", "10")) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(UserError, match="did not finish|not a run folder"):
        from tunesmith.config import build_config
        from tunesmith.train.continual import prior_run

        prior_run(build_config({"task": "text-classification", "from_run": str(tmp_path / "nothing")}, "test"))
