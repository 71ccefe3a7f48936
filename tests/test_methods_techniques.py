"""Methods (bitfit, freeze + unfreeze_top_k, ia3, rsLoRA, DoRA) and training techniques (layer-wise
LR decay, label smoothing, class weights, focal loss, gradient checkpointing): each test fails
if the option silently does nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
import math

import pytest
import yaml
import torch
from safetensors.torch import load_file

from conftest import train_args
from tunesmith.cli import main
from tunesmith.config import build_config
from tunesmith.errors import UserError
from tunesmith.tasks import TASKS


TEXT = TASKS["text-classification"]  # the task every model here is built for


def _model(tiny_model, labels=("a", "b", "c")):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=len(labels))


def _cfg(**values):
    return build_config({"task": "text-classification", "model": "minilm", **values}, "test")


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_bitfit_trains_body_biases_and_the_head_only(tiny_model):
    from tunesmith.methods import METHODS

    model = METHODS["bitfit"].apply(_model(tiny_model), _cfg(method="bitfit"), TEXT)
    trainable = _trainable(model)
    body = {n for n in trainable if n.startswith("bert.")}
    assert body and all(n.endswith(".bias") for n in body)
    assert {"classifier.weight", "classifier.bias"} <= trainable
    assert not any(n.endswith(".weight") and n.startswith("bert.") for n in trainable)


def test_bitfit_run_changes_biases_and_leaves_body_weights_as_pretrained(tmp_path, tiny_model, toy_csv):
    assert main(train_args(toy_csv, tiny_model, tmp_path, "bitfit", "--method", "bitfit", "--epochs", "2")) == 0
    base = load_file(f"{tiny_model}/model.safetensors")
    tuned = load_file(str(tmp_path / "bitfit" / "model" / "model.safetensors"))
    weight = "encoder.layer.0.attention.self.query.weight"
    bias = "encoder.layer.0.attention.self.query.bias"
    assert torch.equal(tuned["bert." + weight], base[weight])
    assert not torch.equal(tuned["bert." + bias], base[bias])
    params = json.loads((tmp_path / "bitfit" / "metrics.json").read_text())["parameters"]
    assert params["trainable_pct"] < 10


def test_freeze_unfreeze_top_k_trains_the_top_layers_only(tiny_model):
    from tunesmith.methods import METHODS

    model = METHODS["freeze"].apply(_model(tiny_model), _cfg(method="freeze", unfreeze_top_k=1), TEXT)
    trainable = _trainable(model)
    assert any(n.startswith("bert.encoder.layer.1.") for n in trainable)
    assert not any(n.startswith(("bert.encoder.layer.0.", "bert.embeddings.")) for n in trainable)
    assert "classifier.weight" in trainable
    with pytest.raises(UserError, match="only 2 layers"):
        METHODS["freeze"].apply(_model(tiny_model), _cfg(method="freeze", unfreeze_top_k=3), TEXT)
    with pytest.raises(UserError, match="read only with --method freeze"):
        _cfg(method="full", unfreeze_top_k=1)


def test_ia3_trains_scaling_vectors_and_head_and_merges_into_a_plain_model(tmp_path, tiny_model, toy_csv):
    from tunesmith.methods import METHODS

    model = METHODS["ia3"].apply(_model(tiny_model), _cfg(method="ia3"), TEXT)
    trainable = _trainable(model)
    assert trainable and all("ia3_l" in n or "classifier" in n for n in trainable)
    assert main(train_args(toy_csv, tiny_model, tmp_path, "ia3", "--method", "ia3", "--epochs", "2")) == 0
    assert (tmp_path / "ia3" / "adapter" / "adapter_config.json").is_file()
    config = json.loads((tmp_path / "ia3" / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3"
    tuned = load_file(str(tmp_path / "ia3" / "model" / "model.safetensors"))
    assert not any("ia3" in k for k in tuned)  # merged: plain transformers weights


def test_rslora_and_dora_switches_reach_the_adapters(tiny_model):
    from tunesmith.methods import METHODS

    plain = METHODS["lora"].apply(_model(tiny_model), _cfg(method="lora", lora_r=4, lora_alpha=8), TEXT)
    rs = METHODS["lora"].apply(_model(tiny_model), _cfg(method="lora", lora_r=4, lora_alpha=8, lora_rslora=True), TEXT)
    dora = METHODS["lora"].apply(_model(tiny_model), _cfg(method="lora", lora_r=4, lora_dora=True), TEXT)
    query = "base_model.model.bert.encoder.layer.0.attention.self.query"
    assert dict(plain.named_modules())[query].scaling["default"] == pytest.approx(8 / 4)
    assert dict(rs.named_modules())[query].scaling["default"] == pytest.approx(8 / math.sqrt(4))
    assert any("lora_magnitude_vector" in n for n in _trainable(dora))
    assert not any("lora_magnitude_vector" in n for n in _trainable(plain))


def test_layer_decay_gives_each_depth_its_learning_rate(tiny_model):
    from tunesmith.train.optim import build_optimizer

    model = _model(tiny_model)
    optimizer = build_optimizer(model, 1e-3, 0.01, layer_decay=0.5)
    lr_of = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            lr_of[id(p)] = group["lr"]
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["bert.encoder.layer.1.attention.self.query.weight"])] == pytest.approx(1e-3 * 0.5)
    assert lr_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(1e-3 * 0.25)
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == pytest.approx(1e-3 * 0.125)
    flat = build_optimizer(model, 1e-3, 0.01)
    assert {g["lr"] for g in flat.param_groups} == {1e-3}


def test_head_lr_applies_to_the_head_only(tiny_model):
    from tunesmith.train.optim import build_optimizer

    model = _model(tiny_model)
    optimizer = build_optimizer(model, 5e-5, 0.01, head_lr=1e-3)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = 1e-3 if name.startswith("classifier.") else 5e-5
        assert lr_of[id(p)] == pytest.approx(expected), name


def test_classification_losses_match_hand_computed_values():
    from tunesmith.train.losses import balanced_weights, classification_loss

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([0, 2])
    log_p = logits.log_softmax(-1)
    plain = -(log_p[0, 0] + log_p[1, 2]) / 2
    assert classification_loss(logits, targets).item() == pytest.approx(plain.item(), abs=1e-6)
    # Label smoothing 0.3 over 3 classes: target 0.8 on the class, 0.1 elsewhere.
    q = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    smoothed = -(q * log_p).sum(-1).mean()
    assert classification_loss(logits, targets, label_smoothing=0.3).item() == pytest.approx(smoothed.item(), abs=1e-6)
    # Focal, gamma 2: each example's loss times (1 - p_true)^2.
    p_true = torch.stack([log_p[0, 0], log_p[1, 2]]).exp()
    focal = ((1 - p_true) ** 2 * -torch.stack([log_p[0, 0], log_p[1, 2]])).mean()
    assert classification_loss(logits, targets, focal_gamma=2.0).item() == pytest.approx(focal.item(), abs=1e-6)
    assert focal.item() < plain.item()
    # Balanced weights: n / (k * count); the rare class weighs most.
    weights = balanced_weights(["a", "a", "a", "b"], ["a", "b"])
    assert weights.tolist() == pytest.approx([4 / 6, 4 / 2])
    weighted = classification_loss(logits[:, :2], torch.tensor([0, 1]), weights=weights)
    expected = (weights[0] * -logits[:, :2].log_softmax(-1)[0, 0] + weights[1] * -logits[:, :2].log_softmax(-1)[1, 1]) / weights.sum()
    assert weighted.item() == pytest.approx(expected.item(), abs=1e-6)


def test_loss_options_change_the_training_loss_and_are_refused_elsewhere(tmp_path, tiny_model, toy_csv):
    common = ("--method", "full", "--epochs", "1", "--max-steps", "1")
    assert main(train_args(toy_csv, tiny_model, tmp_path, "plain", *common)) == 0
    assert main(train_args(toy_csv, tiny_model, tmp_path, "smooth", *common, "--label-smoothing", "0.2",
                           "--class-weights", "balanced")) == 0
    first = [json.loads((tmp_path / name / "history.jsonl").read_text().splitlines()[0])["loss"]
             for name in ("plain", "smooth")]
    assert first[0] != pytest.approx(first[1], abs=1e-4)  # same seed and batch, another loss
    with pytest.raises(UserError, match="single-label classifiers"):
        build_config({"task": "regression", "data": "x.csv", "label_smoothing": 0.1}, "test")


def test_gradient_checkpointing_is_switched_on_and_gives_the_same_loss(tmp_path, tiny_model, toy_csv, monkeypatch):
    from tunesmith.commands import train as train_command

    seen = {}
    original = train_command._checkpoint_activations

    def spy(model, cfg):
        original(model, cfg)
        seen["on"] = model.is_gradient_checkpointing

    monkeypatch.setattr(train_command, "_checkpoint_activations", spy)
    common = ("--method", "lora", "--epochs", "1", "--max-steps", "2")
    assert main(train_args(toy_csv, tiny_model, tmp_path, "plain", *common)) == 0
    assert main(train_args(toy_csv, tiny_model, tmp_path, "ckpt", *common, "--gradient-checkpointing")) == 0
    assert seen == {"on": True}
    losses = [[json.loads(line)["loss"] for line in (tmp_path / name / "history.jsonl").read_text().splitlines()
               if "loss" in json.loads(line)] for name in ("plain", "ckpt")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)  # recomputation changes memory, not the maths


def _grads(model, loss_fn, batch):
    model.zero_grad()
    loss, extras = loss_fn(model, batch)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]), extras


@pytest.mark.parametrize("kind", ["fgm", "pgd"])
def test_adversarial_training_changes_the_gradient_and_leaves_weights_alone(tiny_model, kind):
    from tunesmith.train.adversarial import adversarial_loss, model_loss

    model = _model(tiny_model).eval()  # no dropout: differences come from the perturbation only
    batch = {"input_ids": torch.tensor([[2, 10, 11, 12, 3], [2, 13, 14, 3, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]), "labels": torch.tensor([0, 2])}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    plain, _ = _grads(model, model_loss, batch)
    tiny, _ = _grads(model, adversarial_loss(model_loss, kind, 1e-9), batch)
    assert torch.allclose(tiny, 2 * plain, atol=1e-5)  # a vanishing perturbation: clean + clean
    adv, extras = _grads(model, adversarial_loss(model_loss, kind, 5.0), batch)
    assert not torch.allclose(adv, 2 * plain, atol=1e-3)  # a real one changes the gradient
    assert extras["perturbation_norm"] == pytest.approx(5.0, rel=1e-4) if kind == "fgm" else \
        extras["perturbation_norm"] <= 5.0 + 1e-4
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # nothing leaks into weights


def test_fgm_works_with_frozen_embeddings_under_lora(tmp_path, tiny_model, toy_csv, capsys):
    args = train_args(toy_csv, tiny_model, tmp_path, "fgm", "--method", "lora", "--epochs", "1", "--adversarial", "fgm",
                      "--adv-epsilon", "0.5")
    del args[args.index("--lr"):args.index("--lr") + 2]  # LoRA's default rate
    assert main(args) == 0
    history = [json.loads(line) for line in (tmp_path / "fgm" / "history.jsonl").read_text().splitlines()]
    assert history[0]["perturbation_norm"] == pytest.approx(0.5, rel=1e-3)
    # A short classification run takes LoRA's short-run rate, recorded so the run re-runs the same.
    assert yaml.safe_load((tmp_path / "fgm" / "config.yaml").read_text())["lr"] == 2e-3
    assert "lr: 0.002, lora's rate for" in capsys.readouterr().out


def test_soup_is_the_arithmetic_mean_of_its_members_and_a_normal_run(tmp_path, tiny_model, toy_csv, capsys):
    members = []
    for name, lr in (("a", "3e-3"), ("b", "1e-3")):
        assert main(train_args(toy_csv, tiny_model, tmp_path, name, "--method", "full", "--epochs", "2", "--lr", lr)) == 0
        members.append(tmp_path / name)
    assert main(["soup", *map(str, members), "--name", "soup", "--output", str(tmp_path)]) == 0
    a, b = (load_file(str(m / "model" / "model.safetensors")) for m in members)
    mean = load_file(str(tmp_path / "soup" / "model" / "model.safetensors"))
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(mean[key], (a[key] + b[key]) / 2, atol=1e-7)
    metrics = json.loads((tmp_path / "soup" / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    out = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "soup"), toy_csv, "-o", str(out)]) == 0 and out.is_file()
    # Members tested on other rows cannot make an honest soup.
    assert main(train_args(toy_csv, tiny_model, tmp_path, "c", "--method", "full", "--epochs", "1", "--seed", "7")) == 0
    capsys.readouterr()
    assert main(["soup", str(members[0]), str(tmp_path / "c"), "--name", "bad", "--output", str(tmp_path)]) == 2
    assert "another split" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_zero_shot_trains_nothing_and_scores_by_label_similarity(tmp_path, tiny_model, toy_csv):
    from tunesmith.inference import Predictor
    from tunesmith.methods.embedding import ZERO_SHOT_SCALE, EmbeddingClassifier
    from tunesmith.runs import Run

    descriptions = json.dumps({"negative": "bad awful sad", "positive": "good great happy"})
    assert main(train_args(toy_csv, tiny_model, tmp_path, "zs", "--method", "zero-shot",
                           "--label-descriptions", descriptions)) == 0
    run = Run(tmp_path / "zs")
    metrics = json.loads(run.metrics_file.read_text())
    assert metrics["parameters"]["trainable"] == 0 and metrics["training"]["steps"] == 0
    model = EmbeddingClassifier.from_folder(str(run.model_dir))
    base = load_file(f"{tiny_model}/model.safetensors")
    tuned = load_file(str(run.model_dir / "model.safetensors"))
    assert all(torch.equal(tuned[k], base[k]) for k in base if k in tuned)  # the encoder is untouched
    # The head's rows are the scaled embeddings of the descriptions (or of the bare label name).
    predictor = Predictor.from_run(run)
    labels = run.labels()
    texts = {"negative": "bad awful sad", "neutral": "neutral", "positive": "good great happy"}
    encoded = predictor.tokenizer([texts[l] for l in labels], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.embed(encoded["input_ids"], encoded["attention_mask"]) * ZERO_SHOT_SCALE
    assert torch.allclose(model.classifier.weight, expected, atol=1e-5)
    assert main(["predict", str(run.path), toy_csv, "-o", str(tmp_path / "p.csv")]) == 0
    with pytest.raises(UserError, match="not labels of the data"):
        from tunesmith.methods import METHODS

        METHODS["zero-shot"].apply(_model(tiny_model), _cfg(method="zero-shot", label_descriptions={"nope": "x"}), TEXT)


def test_few_shot_contrastive_loss_and_head_fit(tmp_path, tiny_model, toy_csv):
    from tunesmith.inference import Predictor
    from tunesmith.methods import METHODS
    from tunesmith.runs import Run

    few = METHODS["few-shot"]
    model = few.apply(_model(tiny_model), _cfg(method="few-shot"), TEXT)
    assert _trainable(model) and not any(n.startswith("classifier") for n in _trainable(model))
    batch = {"input_ids": torch.tensor([[2, 10, 11, 3], [2, 12, 13, 3], [2, 14, 15, 3]]),
             "attention_mask": torch.ones(3, 4, dtype=torch.long), "labels": torch.tensor([0, 0, 1])}
    e = model.embed(batch["input_ids"], batch["attention_mask"]).detach()
    s = e @ e.T
    expected = ((s[0, 1] - 1) ** 2 * 2 + s[0, 2] ** 2 * 2 + s[1, 2] ** 2 * 2) / 6
    assert few.training_loss(model, batch)[0].item() == pytest.approx(expected.item(), abs=1e-5)

    assert main(train_args(toy_csv, tiny_model, tmp_path, "fs", "--method", "few-shot", "--lr", "1e-3",
                           "--epochs", "3", "--max-train-samples", "48")) == 0
    run = Run(tmp_path / "fs")
    metrics = json.loads(run.metrics_file.read_text())
    assert metrics["test"]["accuracy"] > 0.6, metrics["test"]  # the toy cues are learnable from 16 per class
    train = run.split("train")
    probs = Predictor.from_run(run).predict(train.texts)
    labels = run.labels()
    assert np_mean([labels[i] == y for i, y in zip(probs.argmax(1), train.labels)]) > 0.8  # the head fits its data


def np_mean(values) -> float:
    return sum(values) / len(values)


def test_ensemble_averages_its_members_and_is_a_run_eval_predict_and_serve_accept(tmp_path, tiny_model, toy_csv, capsys):
    import numpy as np

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    members = []
    for name, extra in (("a", ("--method", "full", "--lr", "3e-3")), ("b", ("--method", "full", "--lr", "1e-3")),
                        ("c", ("--method", "full", "--lr", "5e-3"))):
        assert main(train_args(toy_csv, tiny_model, tmp_path, name, *extra)) == 0
        members.append(str(tmp_path / name))
    assert main(["ensemble", *members, "--name", "ens", "--output", str(tmp_path)]) == 0
    run = Run(tmp_path / "ens")
    test = run.split("test")
    expected = np.mean([Predictor.from_run(Run(Path(m))).predict(test.texts) for m in members], axis=0)
    assert np.allclose(Predictor.from_run(run).predict(test.texts), expected, atol=1e-6)
    accuracy = {Path(m).name: json.loads((Path(m) / "metrics.json").read_text())["test"]["accuracy"] for m in members}
    ensemble_accuracy = json.loads(run.metrics_file.read_text())["test"]["accuracy"]
    # On this fixed toy set (seed 0) the average is at least as good as its best member.
    assert ensemble_accuracy >= max(accuracy.values()), (ensemble_accuracy, accuracy)
    for m in members:  # self-contained: the members can go
        shutil.rmtree(m)
    assert main(["eval", str(run.path)]) == 0
    assert main(["predict", str(run.path), toy_csv, "-o", str(tmp_path / "p.csv")]) == 0
    from fastapi.testclient import TestClient

    from tunesmith.serve.app import create_app
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import check_settings, run_info
    from tunesmith.serve.settings import ServeSettings

    check_settings(ServeSettings(run=str(run.path)))
    app = create_app(Predictor.from_run(run), ServeSettings(run=str(run.path)), KeyRing(["k" * 24]), run_info(run))
    with TestClient(app) as client:
        answer = client.post("/v1/predict", json={"inputs": ["good film"]}, headers={"X-API-Key": "k" * 24})
        assert answer.status_code == 200 and answer.json()[0]["label"] in run.labels()


def test_ensemble_vote_takes_the_majority_label():
    import numpy as np

    from tunesmith.ensemble import EnsemblePredictor

    class Fixed:
        def __init__(self, probs):
            self.probs = np.array(probs)

        def predict(self, inputs, batch_size=32):
            return self.probs

    members = [Fixed([[0.6, 0.4]]), Fixed([[0.51, 0.49]]), Fixed([[0.0, 1.0]])]
    mean = EnsemblePredictor(members, "mean", ["x", "y"], None, 16).predict(["t"])
    vote = EnsemblePredictor(members, "vote", ["x", "y"], None, 16).predict(["t"])
    assert mean.argmax() == 1 and vote.argmax() == 0  # two members of three say x


def test_an_ensemble_json_naming_a_member_outside_the_ensemble_is_refused(tmp_path, tiny_model):
    """A run folder from someone else must not make tunesmith load models from other places."""
    from conftest import train_tiny_run
    from tunesmith.errors import UserError
    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    member = train_tiny_run(tmp_path, tiny_model)
    assert main(["ensemble", str(member), str(member), "--name", "both", "--output", str(tmp_path)]) == 0
    spec_file = tmp_path / "both" / "ensemble.json"
    spec = json.loads(spec_file.read_text())
    for outside in (str(member), "../" + member.name, "members/../../" + member.name):
        spec_file.write_text(json.dumps({**spec, "members": [outside]}))
        with pytest.raises(UserError, match="not inside the ensemble's folder"):
            Predictor.from_run(Run(tmp_path / "both"))


def test_compare_trains_each_method_on_the_same_splits_and_tabulates_them(tmp_path, tiny_model, toy_csv, capsys):
    folder = tmp_path / "cmp"
    args = ["compare", toy_csv, "--methods", "full,bitfit,freeze", "--model", tiny_model, "--output-folder", str(folder),
            "--max-length", "16", "--batch-size", "8", "--epochs", "2", "--lr", "3e-3", "--no-baseline", "--seed", "0"]
    assert main(args) == 0
    rows = json.loads((folder / "compare.json").read_text())
    assert [r["method"] for r in rows] == ["full", "bitfit", "freeze"]
    for r in rows:  # every number is the run's own
        metrics = json.loads((folder / "runs" / r["method"] / "metrics.json").read_text())
        assert r["value"] == metrics["test"]["macro_f1"] and r["peak_memory_mb"] == metrics["peak_memory_mb"]
    splits = {(folder / "runs" / m / "data" / "test.jsonl").read_text() for m in ("full", "bitfit", "freeze")}
    assert len(splits) == 1
    assert rows[0]["trainable_pct"] == 100.0 and rows[1]["trainable_pct"] < rows[0]["trainable_pct"]
    assert (folder / "compare.png").stat().st_size > 0 and "| bitfit |" in (folder / "compare.md").read_text()
    capsys.readouterr()
    assert main(["compare", toy_csv, "--methods", "full,nonsense", "--output-folder", str(tmp_path / "x")]) == 2
    assert main(["compare", toy_csv, "--output-folder", str(tmp_path / "y")]) == 2  # no methods anywhere
    (tmp_path / "list.yaml").write_text("methods: [full, nonsense]\n")
    assert main(["compare", toy_csv, "--config", str(tmp_path / "list.yaml"), "--output-folder", str(tmp_path / "z")]) == 2
    assert not any((tmp_path / d).exists() for d in ("x", "y", "z"))  # checked before anything is written
    assert "unknown method 'nonsense'" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_compare_and_train_resolve_a_method_the_same_way(tmp_path, tiny_model, toy_csv):
    """`compare --methods lora` once wrote each config before reading the data, so its LoRA
    trained at the method's long-run 5e-4 while `train --method lora` on the same data chose
    2e-3 for its few steps. Both now record the plan resolved from the data."""
    import yaml

    shared = [toy_csv, "--model", tiny_model, "--max-length", "16", "--batch-size", "8", "--max-steps", "2",
              "--no-baseline", "--no-quality-checks", "--seed", "0"]
    assert main(["compare", *shared[:1], "--methods", "lora", "--output-folder", str(tmp_path / "cmp"), *shared[1:]]) == 0
    assert main(["train", "--data", *shared, "--method", "lora", "--output", str(tmp_path), "--name", "alone"]) == 0
    compared = yaml.safe_load((tmp_path / "cmp" / "runs" / "lora" / "config.yaml").read_text())
    alone = yaml.safe_load((tmp_path / "alone" / "config.yaml").read_text())
    for key in ("lr", "epochs", "model", "max_length", "metric", "batch_size", "grad_accum"):
        assert compared[key] == alone[key], key
    assert alone["lr"] == 2e-3 and alone["epochs"] > 3  # a short run: LoRA's short-run rate, raised passes


@pytest.mark.parametrize("verb", ["train", "check", "eval", "predict", "serve", "generate", "compare", "soup",
                                  "ensemble", "quickstart"])
def test_every_verb_has_working_help(verb, capsys):
    with pytest.raises(SystemExit) as done:
        main([verb, "--help"])
    assert done.value.code == 0 and "usage: tunesmith" in capsys.readouterr().out


@pytest.mark.parametrize("layout, per_layer", [("houlsby", 2), ("pfeiffer", 1)])
def test_adapters_start_as_the_identity_and_train_only_themselves(tiny_model, layout, per_layer):
    from tunesmith.methods import METHODS

    model = _model(tiny_model).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        before = model(ids).logits
        adapted = METHODS["adapter"].apply(model, _cfg(method="adapter", adapter_layout=layout, adapter_size=8), TEXT)
        assert torch.allclose(adapted(ids).logits, before, atol=1e-6)  # zero-initialised up-projection
    names = {n.split(".adapter.")[0] for n in _trainable(adapted) if ".adapter." in n}
    assert len(names) == 2 * per_layer  # 2 layers
    others = {n for n in _trainable(adapted) if ".adapter." not in n and not n.startswith("classifier")}
    assert all("LayerNorm" in n or ".pooler." in n for n in others)  # norms (houlsby) and the pooler (head)
    assert any("LayerNorm" in n for n in others) == (layout == "houlsby")


def test_adapters_learn_the_toy_task(tiny_model):
    """The adapted model leaves the initial plateau and fits the toy cues (a plain full-batch loop:
    zero-initialised adapters on a random tiny encoder plateau for ~40 steps first)."""
    from transformers import AutoTokenizer

    from conftest import CUES, make_rows
    from tunesmith.data.batching import collate_rows
    from tunesmith.methods import METHODS
    from tunesmith.train.optim import build_optimizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = make_rows(20)
    labels = sorted(CUES)
    batch = collate_rows([{"input_ids": tokenizer(r["text"])["input_ids"], "labels": labels.index(r["label"])}
                          for r in rows], 0)
    model = METHODS["adapter"].apply(_model(tiny_model), _cfg(method="adapter", adapter_size=16), TEXT)
    optimizer = build_optimizer(model, 3e-3, 0.01)
    for _ in range(100):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.7  # from ln 3 = 1.10


def test_adapter_run_keeps_base_weights_and_reloads_with_its_adapters(tmp_path, tiny_model, toy_csv):
    import numpy as np
    from transformers import AutoModelForSequenceClassification

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    assert main(train_args(toy_csv, tiny_model, tmp_path, "ad", "--method", "adapter", "--adapter-size", "16")) == 0
    run = Run(tmp_path / "ad")
    base = load_file(f"{tiny_model}/model.safetensors")
    tuned = load_file(str(run.model_dir / "model.safetensors"))
    weight = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(tuned["bert." + weight], base[weight])
    ups = [v for k, v in tuned.items() if k.endswith(".adapter.up.weight")]
    assert len(ups) == 4 and all(v.abs().sum() > 0 for v in ups)  # trained away from their zero start
    texts = run.split("test").texts
    with_adapters = Predictor.from_run(run).predict(texts)
    # Loaded without restore_adapters (plain transformers), the predictions would differ.
    predictor = Predictor.from_run(run)
    predictor.model = AutoModelForSequenceClassification.from_pretrained(run.model_dir).eval()
    assert not np.allclose(predictor.predict(texts), with_adapters, atol=1e-6)

    # Loaded from Python, the run says nothing about the adapter weights plain transformers does
    # not know (it lists them as UNEXPECTED in a LOAD REPORT, as the plain load here still does).
    import logging

    import transformers

    reports = []
    collect = logging.Handler()
    collect.emit = lambda record: reports.append(record.getMessage())
    logger, verbosity = logging.getLogger("transformers.modeling_utils"), transformers.utils.logging.get_verbosity()
    logger.addHandler(collect)
    transformers.utils.logging.set_verbosity_warning()  # the CLI above turned it down
    try:
        Predictor.from_run(run)
        AutoModelForSequenceClassification.from_pretrained(run.model_dir)
    finally:
        logger.removeHandler(collect)
        transformers.utils.logging.set_verbosity(verbosity)
    assert len(reports) == 1 and "LOAD REPORT" in reports[0] and ".adapter." in reports[0]


def test_a_load_report_naming_more_than_adapter_keys_still_reaches_the_user():
    import logging

    from tunesmith.methods.adapter import _OnlyAdapterKeys

    def report(*rows):
        record = logging.LogRecord("transformers.modeling_utils", logging.WARNING, __file__, 1,
                                   "BertModel LOAD REPORT from: run/model\nKey | Status |  | \n---+---\n"
                                   + "\n".join(rows) + "\n\nNotes:\n- UNEXPECTED: can be ignored", None, None)
        return _OnlyAdapterKeys().filter(record)

    assert not report("encoder.layer.{0, 1}.output.dense.adapter.up.weight | UNEXPECTED |  | ")
    assert report("encoder.layer.{0, 1}.output.dense.adapter.up.weight | UNEXPECTED |  | ",
                  "encoder.layer.0.attention.self.query.weight | MISSING |  | ")  # a damaged folder
    assert report("pooler.dense.weight | UNEXPECTED |  | ")


def test_average_last_keeps_the_mean_of_the_last_k_evaluations(tmp_path, tiny_model, toy_csv):
    assert main(train_args(toy_csv, tiny_model, tmp_path, "avg", "--method", "full", "--epochs", "2",
                           "--eval-every", "4", "--average-last", "3")) == 0
    kept = sorted((tmp_path / "avg" / "checkpoints").glob("eval-*"))
    assert len(kept) == 3  # older evaluation checkpoints are pruned as training goes
    states = [load_file(str(k / "trainable.safetensors")) for k in kept]
    saved = load_file(str(tmp_path / "avg" / "model" / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(saved[key], sum(s[key] for s in states) / 3, atol=1e-7)
    assert not torch.allclose(saved[key], states[-1][key], atol=1e-6)  # not simply the last
