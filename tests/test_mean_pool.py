"""Sequence heads on a sentence-embedding backbone read its mean-pooled states
(tasks/mean_pool.py): chosen from the backbone's own pooling config, trained by every method
that can, reloaded with equal answers, loadable without tunesmith, exported and served."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from conftest import make_rows, train_args, write_csv
from tunesmith.cli import main
from tunesmith.inference import Predictor
from tunesmith.runs import Run
from tunesmith.tasks.mean_pool import MeanPoolClassifier, is_mean_pool_folder, trained_pooling

TEXTS = ["good good great", "bad awful terrible", "fine", "a much longer text that is good and then bad"]


def test_the_pooling_is_read_from_the_backbone(tiny_model, tiny_sentence_model, tmp_path):
    assert trained_pooling(tiny_sentence_model) == "mean"
    assert trained_pooling(tiny_model) == "cls"  # no sentence-transformers config: transformers' own head
    cls_trained = tmp_path / "cls"
    cls_trained.mkdir()
    (cls_trained / "modules.json").write_text(json.dumps([{"path": "1_Pooling", "type": "x.Pooling"}]))
    (cls_trained / "1_Pooling").mkdir()
    (cls_trained / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert trained_pooling(str(cls_trained)) == "cls"


def test_the_head_reads_the_mean_over_real_tokens_only(tiny_sentence_model):
    model = MeanPoolClassifier.build(tiny_sentence_model, ["a", "b"], "single_label_classification").eval()
    ids = torch.tensor([[2, 7, 8, 3, 0, 0]])
    short = model(input_ids=ids[:, :4], attention_mask=torch.ones(1, 4, dtype=torch.long)).logits
    padded = model(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]])).logits
    torch.testing.assert_close(short, padded)  # padding changes nothing


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "adapter", "ia3"])
def test_a_mean_pooled_run_trains_reloads_and_serves(method, tiny_sentence_model, tmp_path):
    from tunesmith.serve.app import create_app
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    data = write_csv(tmp_path / "toy.csv", make_rows(40))
    assert main(train_args(data, tiny_sentence_model, tmp_path / "runs", "r", "--method", method, "--epochs", "4",
                           "--lr", "1e-2" if method == "freeze" else "3e-3")) == 0
    run = Run(tmp_path / "runs" / "r")
    assert is_mean_pool_folder(str(run.model_dir))
    reported = json.loads(run.metrics_file.read_text())["test"]
    assert reported["accuracy"] >= 0.8, reported  # the toy cues are easy: the head did learn
    test = run.split("test")
    predictor = Predictor.from_run(run)
    assert isinstance(predictor.model, MeanPoolClassifier)
    again = predictor.task.metrics(test.labels, predictor.predict(test.texts), run.labels())
    assert again["macro_f1"] == pytest.approx(reported["macro_f1"], abs=1e-4)
    with TestClient(create_app(predictor, ServeSettings(run=str(run.path)), KeyRing(["k" * 32]), run_info(run))) as client:
        answer = client.post("/v1/predict", json={"inputs": TEXTS}, headers={"Authorization": "Bearer " + "k" * 32})
    assert answer.status_code == 200, answer.text
    assert [row["label"] for row in answer.json()] == [run.labels()[i] for i in predictor.predict(TEXTS).argmax(1)]


def test_freeze_trains_only_the_head_on_the_mean(tiny_sentence_model, tmp_path):
    from tunesmith.config import build_config
    from tunesmith.methods import METHODS
    from tunesmith.tasks import TASKS

    model = MeanPoolClassifier.build(tiny_sentence_model, ["a", "b", "c"], "single_label_classification")
    cfg = build_config({"method": "freeze", "model": tiny_sentence_model}, "test")
    frozen = METHODS["freeze"].apply(model, cfg, TASKS["text-classification"])
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}


def test_the_saved_model_loads_without_tunesmith(tiny_sentence_model, tmp_path):
    """The lines the module docstring (and docs/architecture.md) give, on a trained run."""
    from transformers import AutoModel, AutoTokenizer

    data = write_csv(tmp_path / "toy.csv", make_rows(20))
    assert main(train_args(data, tiny_sentence_model, tmp_path / "runs", "r", "--method", "full", "--epochs", "1")) == 0
    folder = str(Run(tmp_path / "runs" / "r").model_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    body = AutoModel.from_pretrained(folder).eval()
    head = load_file(f"{folder}/classifier.safetensors")
    with torch.no_grad():
        hidden = body(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        logits = (pooled - head["feature_mean"]) / head["feature_scale"] @ head["weight"].T + head["bias"]
    probs = torch.softmax(logits, -1).numpy()
    np.testing.assert_allclose(probs, Predictor.from_run(Run(Path(folder).parent)).predict(TEXTS), atol=1e-5)


def test_a_mean_pooled_run_exports_to_onnx_with_equal_answers(tiny_sentence_model, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    data = write_csv(tmp_path / "toy.csv", make_rows(20))
    assert main(train_args(data, tiny_sentence_model, tmp_path / "runs", "r", "--method", "full", "--epochs", "1")) == 0
    run = Run(tmp_path / "runs" / "r")
    assert main(["export", str(run.path)]) == 0
    np.testing.assert_allclose(Predictor.from_run(run, "onnx").predict(TEXTS), Predictor.from_run(run).predict(TEXTS),
                               atol=1e-5)


def test_prompt_methods_keep_transformers_own_head(tiny_sentence_model, tmp_path):
    data = write_csv(tmp_path / "toy.csv", make_rows(20))
    assert main(train_args(data, tiny_sentence_model, tmp_path / "runs", "r", "--method", "prompt", "--epochs", "1",
                           "--prompt-tokens", "2")) == 0
    model_dir = Run(tmp_path / "runs" / "r").model_dir
    assert not is_mean_pool_folder(str(model_dir))
    assert json.loads((model_dir / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]


def test_a_soup_of_mean_pooled_runs_averages_their_heads_too(tiny_sentence_model, tmp_path):
    data = write_csv(tmp_path / "toy.csv", make_rows(20))
    members = []
    for name, lr in (("a", "3e-3"), ("b", "1e-3")):  # 3 epochs: enough steps to beat the probe they start as
        assert main(train_args(data, tiny_sentence_model, tmp_path, name, "--method", "full", "--epochs", "3",
                               "--lr", lr)) == 0
        members.append(tmp_path / name)
    assert main(["soup", *map(str, members), "--name", "soup", "--output", str(tmp_path)]) == 0
    a, b = (load_file(str(m / "model" / "classifier.safetensors")) for m in members)
    assert not torch.equal(a["weight"], b["weight"])
    mean = load_file(str(tmp_path / "soup" / "model" / "classifier.safetensors"))
    torch.testing.assert_close(mean["weight"], (a["weight"] + b["weight"]) / 2)


def test_a_run_that_training_cannot_improve_keeps_its_starting_point_the_probe(tiny_sentence_model, tmp_path, capsys):
    """The head starts as the untuned baseline's probe and is validated at step 0 like any
    checkpoint: where no step beats it on validation (a rate too small to move anything), the
    run keeps it, says so, and scores on test exactly as the baseline does."""
    data = write_csv(tmp_path / "toy.csv", make_rows(20))
    assert main(train_args(data, tiny_sentence_model, tmp_path, "still", "--method", "lora", "--epochs", "1",
                           "--lr", "1e-12", "--baseline")) == 0
    run = Run(tmp_path / "still")
    metrics = json.loads(run.metrics_file.read_text())
    assert metrics["val_best"]["step"] == 0
    assert metrics["test"]["accuracy"] == metrics["baseline"]["accuracy"]
    assert metrics["test"]["macro_f1"] == metrics["baseline"]["macro_f1"]
    assert [row["step"] for row in run.history() if "val_macro_f1" in row][0] == 0
    out = capsys.readouterr().out
    assert "step 0: val macro_f1" in out and "no step beat the starting model" in out


def test_pooling_can_be_chosen_and_is_refused_where_no_head_reads_it(tiny_model, tiny_sentence_model, tmp_path,
                                                                     capsys):
    data = write_csv(tmp_path / "toy.csv", make_rows(20))
    assert main(train_args(data, tiny_sentence_model, tmp_path / "runs", "cls", "--method", "full", "--epochs", "1",
                           "--pooling", "cls")) == 0
    assert not is_mean_pool_folder(str(Run(tmp_path / "runs" / "cls").model_dir))
    assert main(train_args(data, tiny_model, tmp_path / "runs", "mean", "--method", "full", "--epochs", "1",
                           "--pooling", "mean")) == 0  # any encoder can be read through its mean
    assert is_mean_pool_folder(str(Run(tmp_path / "runs" / "mean").model_dir))
    capsys.readouterr()
    assert main(train_args(data, tiny_model, tmp_path / "runs", "bad", "--method", "prefix", "--pooling", "mean")) == 2
    assert "pooling mean: method prefix has no mean-pooled head" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "bad").exists()


def test_a_fresh_head_starts_as_the_linear_probe(tiny_sentence_model):
    """Before any training step the classifier gives the probe's own probabilities."""
    from tunesmith import models
    from tunesmith.evaluate.baseline import embed, fit_probe
    from tunesmith.tasks import TASKS

    task = TASKS["text-classification"]
    rows = make_rows(20)
    labels = sorted({r["label"] for r in rows})
    tokenizer = models.load_tokenizer(tiny_sentence_model)
    features = task.encode(tokenizer, [r["text"] for r in rows], [r["label"] for r in rows], labels, 16)
    model = MeanPoolClassifier.build(tiny_sentence_model, labels, "single_label_classification")
    assert task.start_head(model, features, [r["label"] for r in rows], labels, 0)
    ids = [r["input_ids"] for r in features.rows]
    scaler, probe = fit_probe(model.body, ids, [labels.index(r["label"]) for r in rows], features.pad_id)
    expected = probe.predict_proba(scaler.transform(embed(model.body, ids, features.pad_id)))
    np.testing.assert_allclose(task.predict(model.eval(), features), expected, atol=1e-4)


def test_regression_and_multi_label_heads_start_as_their_probes(tiny_sentence_model):
    """Regression's head starts as the ridge probe (its predictions before training are the
    ridge's); multi-label's as one logistic probe per label (the same probabilities)."""
    from tunesmith import models
    from tunesmith.evaluate.baseline import embed, fit_multilabel_probe, fit_ridge
    from tunesmith.tasks import TASKS
    from tunesmith.tasks.multi_label import multi_hot

    rows = make_rows(20)
    texts = [r["text"] for r in rows]
    tokenizer = models.load_tokenizer(tiny_sentence_model)

    task = TASKS["regression"]
    scores = [float(len(t.split())) + (2.0 if "good" in t else 0.0) for t in texts]
    features = task.encode(tokenizer, texts, scores, [], 16)
    model = MeanPoolClassifier.build(tiny_sentence_model, ["score"], "regression")
    assert "ridge" in task.start_head(model, features, scores, [], 0)
    ids = [r["input_ids"] for r in features.rows]
    scaler, weight, bias = fit_ridge(model.body, ids, scores, features.pad_id)
    expected = scaler.transform(embed(model.body, ids, features.pad_id)) @ weight[0] + bias[0]
    np.testing.assert_allclose(task.predict(model.eval(), features), expected, atol=1e-3)
    assert np.corrcoef(expected, scores)[0, 1] > 0.5  # the probe learned something before any step

    task = TASKS["multi-label-classification"]
    sets = [tuple(sorted({r["label"]} | ({"long"} if len(t.split()) > 4 else set()))) for r, t in zip(rows, texts)]
    labels = sorted({name for s in sets for name in s})
    features = task.encode(tokenizer, texts, sets, labels, 16)
    model = MeanPoolClassifier.build(tiny_sentence_model, labels, "multi_label_classification")
    assert "per label" in task.start_head(model, features, sets, labels, 0)
    ids = [r["input_ids"] for r in features.rows]
    scaler, weight, bias = fit_multilabel_probe(model.body, ids, multi_hot(sets, labels), features.pad_id)
    logits = scaler.transform(embed(model.body, ids, features.pad_id)) @ weight.T + bias
    np.testing.assert_allclose(task.predict(model.eval(), features).probs, 1 / (1 + np.exp(-logits)), atol=1e-4)


def test_regression_and_multi_label_runs_report_their_probe_baselines(tmp_path, tiny_sentence_model):
    from tunesmith.cli import main

    rows = make_rows(30)
    scored = [{"text": r["text"], "label": 1.0 if r["label"] == "positive" else 0.0 if r["label"] == "neutral"
               else -1.0} for r in rows]
    data = write_csv(tmp_path / "scores.csv", scored)
    args = ["train", "--data", data, "--task", "regression", "--model", tiny_sentence_model, "--output",
            str(tmp_path / "runs"), "--name", "reg", "--max-length", "16", "--batch-size", "8", "--epochs", "1",
            "--seed", "0"]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "runs" / "reg" / "metrics.json").read_text())
    assert metrics["baseline"]["description"].startswith("ridge") and isinstance(metrics["baseline"]["mse"], float)
    # The head starts as the ridge probe and keeps its best checkpoint on validation, so it is
    # not far behind the baseline even after one epoch on 72 rows.
    assert metrics["test"]["mse"] <= metrics["baseline"]["mse"] * 1.5


def test_a_dead_feature_dimension_is_not_blown_up_by_standardising(tiny_sentence_model):
    """A hidden dimension that is constant up to rounding (MiniLM has one: spread 5e-33) keeps
    a scale of 1; divided by its spread, the body's gradient was infinite, clipping zeroed
    every update, and `full` never moved from the probe."""
    from tunesmith import models
    from tunesmith.data.batching import collate
    from tunesmith.tasks import TASKS

    task = TASKS["text-classification"]
    rows = make_rows(20)
    labels = sorted({r["label"] for r in rows})
    features = task.encode(models.load_tokenizer(tiny_sentence_model), [r["text"] for r in rows],
                           [r["label"] for r in rows], labels, 16)
    model = MeanPoolClassifier.build(tiny_sentence_model, labels, "single_label_classification")
    with torch.no_grad():
        norm = model.body.encoder.layer[-1].output.LayerNorm
        norm.weight[0], norm.bias[0] = 1e-33, 0.0  # dimension 0: rounding noise only
    task.start_head(model, features, [r["label"] for r in rows], labels, 0)
    assert model.feature_scale[0] == 1.0 and model.feature_scale[1:].max() < 1.0
    batch = collate([r["input_ids"] for r in features.rows[:16]], features.pad_id)
    batch["labels"] = torch.tensor([labels.index(r["label"]) for r in rows[:16]])
    model.train()
    model(**batch).loss.backward()
    grads = torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])
    assert torch.isfinite(grads).all()
