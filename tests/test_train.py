"""End-to-end runs of `tunesmith train / eval / predict` on a tiny model and toy data."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_rows, train_args, write_csv
from tunesmith.cli import main


def _run(args, capsys=None) -> int:
    return main(args)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model):
    """One LoRA run shared by the read-only tests below."""
    base = tmp_path_factory.mktemp("lora")
    data = write_csv(base / "toy.csv", make_rows(60))
    os.environ.setdefault("TUNESMITH_CACHE", str(base / "cache"))
    assert main(train_args(data, tiny_model, base / "runs", "lora", "--method", "lora", "--lora-r", "4",
                           "--lr", "1e-2", "--baseline")) == 0
    return base / "runs" / "lora"


def test_run_folder_layout_and_metrics(finished_run):
    run = finished_run
    for name in ("config.yaml", "labels.json", "metrics.json", "history.jsonl", "report.html", "baseline.json",
                 "data/train.jsonl", "data/val.jsonl", "data/test.jsonl", "model/config.json",
                 "model/model.safetensors", "adapter/adapter_config.json", "checkpoints/best/trainable.safetensors",
                 "checkpoints/last/optimizer.safetensors"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"accuracy", "macro_f1", "weighted_f1", "per_class", "confusion_matrix"}
    assert set(metrics["test"]["per_class"]["positive"]) == {"precision", "recall", "f1", "support"}
    assert metrics["training"]["samples_per_second"] > 0 and metrics["training"]["train_seconds"] > 0
    assert metrics["parameters"]["trainable"] < metrics["parameters"]["total"]
    assert metrics["peak_memory_mb"] > 0
    assert metrics["baseline"]["accuracy"] >= 0
    report = (run / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 3 and "baseline" in report
    assert not list(run.rglob("*.pkl")) and not list(run.rglob("*.bin")) and not list(run.rglob("*.pt"))


def test_loss_goes_down(finished_run):
    losses = [json.loads(l)["loss"] for l in (finished_run / "history.jsonl").read_text().splitlines() if '"loss"' in l]
    k = max(1, len(losses) // 5)
    assert sum(losses[-k:]) / k < 0.7 * sum(losses[:k]) / k


def test_config_yaml_reruns_the_same_run(finished_run, tmp_path):
    import yaml

    cfg = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert cfg["lr"] == 1e-2 and cfg["method"] == "lora" and cfg["resume"] is None
    from tunesmith.config import build_config

    build_config(cfg, "config.yaml")  # valid as is


def test_merged_model_loads_in_plain_transformers_with_same_logits(finished_run):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(finished_run / "model")
    batch = tok(["good movie", "the plot was awful and sad"], padding=True, return_tensors="pt")
    merged = AutoModelForSequenceClassification.from_pretrained(finished_run / "model").eval()
    # Rebuild base + adapter the PEFT way and compare: merging must not change the function.
    config = json.loads((finished_run / "adapter" / "adapter_config.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(
        config["base_model_name_or_path"], num_labels=3, id2label=merged.config.id2label, label2id=merged.config.label2id)
    unmerged = PeftModel.from_pretrained(base, finished_run / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, unmerged(**batch).logits, atol=1e-5)


def test_eval_and_predict(finished_run, tmp_path, capsys):
    assert main(["eval", str(finished_run)]) == 0
    assert "accuracy" in capsys.readouterr().out
    external = write_csv(tmp_path / "more.csv", make_rows(5, seed=11))
    assert main(["eval", str(finished_run), external]) == 0
    assert (finished_run / "eval" / "more" / "metrics.json").is_file()

    inputs = tmp_path / "in.csv"
    inputs.write_text("id,text\n1,good happy film\n2,awful sad plot\n")
    assert main(["predict", str(finished_run), str(inputs), "-o", str(tmp_path / "out.csv")]) == 0
    import pandas as pd

    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["id", "text", "label", "score_negative", "score_neutral", "score_positive"]
    scores = out.filter(like="score_")
    assert out["label"].tolist() == [c.removeprefix("score_") for c in scores.idxmax(axis=1)]
    assert (out.filter(like="score_").sum(axis=1) - 1).abs().max() < 1e-4
    assert main(["predict", str(finished_run), str(inputs), "-o", str(tmp_path / "out.jsonl")]) == 0
    rows = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows[0]["id"] == "1" and set(rows[0]["scores"]) == {"negative", "neutral", "positive"}


@pytest.mark.parametrize("method", ["full", "freeze"])
def test_methods_train_what_they_claim(method, tiny_model, tmp_path, toy_csv):
    from safetensors.torch import load_file

    assert main(train_args(toy_csv, tiny_model, tmp_path, method, "--method", method)) == 0
    run = tmp_path / method
    accuracy = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    trained = load_file(str(run / "checkpoints" / "best" / "trainable.safetensors"))
    pretrained = load_file(str(Path(tiny_model) / "model.safetensors"))
    final = load_file(str(run / "model" / "model.safetensors"))
    if method == "freeze":
        assert set(trained) == {"classifier.weight", "classifier.bias"}
        for name, tensor in pretrained.items():  # the encoder is untouched
            assert torch.equal(final["bert." + name.removeprefix("bert.")], tensor), name
    else:
        # The toy data is learnable: a working loop beats chance (1/3) by a wide margin.
        assert accuracy >= 0.9
        assert "bert.embeddings.word_embeddings.weight" in trained
        changed = [n for n, t in pretrained.items() if not torch.equal(final["bert." + n.removeprefix("bert.")], t)]
        assert len(changed) > len(pretrained) // 2


def test_same_seed_same_metrics(tiny_model, tmp_path, toy_csv):
    for name in ("a", "b"):
        assert main(train_args(toy_csv, tiny_model, tmp_path, name, "--method", "full", "--epochs", "1")) == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text())["test"] for n in ("a", "b"))
    assert a == b


def test_grad_accum_matches_a_bigger_batch_in_step_count(tiny_model, tmp_path, toy_csv):
    assert main(train_args(toy_csv, tiny_model, tmp_path, "acc", "--batch-size", "4", "--grad-accum", "2",
                           "--epochs", "1", "--method", "full")) == 0
    m = json.loads((tmp_path / "acc" / "metrics.json").read_text())["training"]
    train_rows = len((tmp_path / "acc" / "data" / "train.jsonl").read_text().splitlines())
    assert m["steps"] == -(-(-(-train_rows // 4)) // 2)  # ceil(ceil(n/4)/2)


def test_early_stopping_stops(tiny_model, tmp_path, toy_csv):
    args = train_args(toy_csv, tiny_model, tmp_path, "es", "--method", "freeze", "--lr", "1e-9", "--epochs", "20",
                      "--eval-every", "2", "--early-stopping", "2", "--metric", "loss")
    assert main(args) == 0
    m = json.loads((tmp_path / "es" / "metrics.json").read_text())["training"]
    assert m["stopped_early"] and m["steps"] < m["total_steps"]


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tiny_model, tmp_path, toy_csv, capsys, monkeypatch):
    from transformers import BertForSequenceClassification

    original = BertForSequenceClassification.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] > 6:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(BertForSequenceClassification, "forward", poisoned)
    code = main(train_args(toy_csv, tiny_model, tmp_path, "nan", "--method", "full", "--eval-every", "3"))
    err = capsys.readouterr().err
    assert code == 3 and "loss became nan at step 7" in err and "lower --lr" in err
    assert (tmp_path / "nan" / "checkpoints" / "last" / "state.json").is_file()
    assert not (tmp_path / "nan" / "metrics.json").exists()  # does not look finished


def test_kill_9_then_resume_reaches_the_same_metrics(tiny_model, tmp_path, toy_csv):
    common = ("--method", "lora", "--lora-r", "4", "--eval-every", "3", "--epochs", "4")
    assert main(train_args(toy_csv, tiny_model, tmp_path, "straight", *common)) == 0

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", *train_args(toy_csv, tiny_model, tmp_path, "killed", *common)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "checkpoints" / "last" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["state"]["step"] >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists()

    assert main(["train", "--resume", str(tmp_path / "killed")]) == 0
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert resumed["test"] == straight["test"]
    assert resumed["val_best"] == straight["val_best"]
    steps = [json.loads(l)["step"] for l in (tmp_path / "killed" / "history.jsonl").read_text().splitlines()
             if '"loss"' in l]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # replayed steps are not logged twice


def test_resume_of_finished_run_is_refused(finished_run, capsys):
    assert main(["train", "--resume", str(finished_run)]) == 2
    assert "already finished" in capsys.readouterr().err


def test_eval_detects_the_same_columns_as_train(finished_run, tmp_path):
    external = tmp_path / "reviews.csv"
    external.write_text("review,sentiment\ngood happy film,positive\nawful sad plot,negative\n")
    assert main(["eval", str(finished_run), str(external)]) == 0
    assert (finished_run / "eval" / "reviews" / "metrics.json").is_file()


def test_train_warns_when_the_untuned_baseline_wins():
    from tunesmith.commands.train import versus_baseline
    from tunesmith.tasks import TASKS

    probe = TASKS["text-classification"].baseline_name

    worse = {"test": {"macro_f1": 0.80}, "baseline": {"macro_f1": 0.91}}
    lines = versus_baseline(worse, "macro_f1", True, probe)
    assert "0.8000" in lines[0] and "0.9100" in lines[0]
    assert lines[1].startswith("warning:") and "--epochs" in lines[1]
    better = {"test": {"macro_f1": 0.93}, "baseline": {"macro_f1": 0.91}}
    assert len(versus_baseline(better, "macro_f1", True, probe)) == 1
    # Lower is better for a loss: a higher tuned loss is the losing case.
    lost = versus_baseline({"test": {"loss": 0.5}, "baseline": {"loss": 0.4}}, "loss", False, "the model before tuning")
    assert len(lost) == 2 and "untuned baseline, the model before tuning: 0.4000" in lost[0]
    assert versus_baseline({"test": {"macro_f1": 0.9}, "baseline": None}, "macro_f1", True, probe) == ["test macro_f1 0.9000"]


def test_a_loss_to_the_baseline_within_the_test_splits_noise_is_a_note_not_a_warning():
    """BBC News: 212 test articles, the probe 0.9723 and LoRA 0.9673 macro-F1, one article apart
    (one standard error of 0.9723 on 212 rows is 0.0113)."""
    from tunesmith.commands.train import versus_baseline

    close = versus_baseline({"test": {"macro_f1": 0.9673, "count": 212}, "baseline": {"macro_f1": 0.9723}},
                            "macro_f1", True, "a probe")
    assert close[1].startswith("note:") and "within the noise of 212 test rows" in close[1] and "0.0113" in close[1]
    # The same gap on 3,080 rows (banking77's test set; SE 0.0030) is a loss.
    far = versus_baseline({"test": {"macro_f1": 0.9673, "count": 3080}, "baseline": {"macro_f1": 0.9723}},
                          "macro_f1", True, "a probe")
    assert far[1].startswith("warning:")


def test_small_data_trains_more_passes_by_default_and_records_them(tmp_path, tiny_model, capsys):
    """No --epochs on 48 training rows (2 steps a pass at batch 32): 10 passes, said in one
    line and written to config.yaml, so the run re-runs as it ran."""
    import yaml

    data = write_csv(tmp_path / "toy.csv", make_rows(20))
    assert main(["train", "--data", data, "--model", tiny_model, "--method", "freeze", "--max-length", "16",
                 "--no-baseline", "--output", str(tmp_path / "runs"), "--name", "small"]) == 0
    assert "epochs: 10, so that 48 training rows make at least 100 optimizer steps" in capsys.readouterr().out
    run = tmp_path / "runs" / "small"
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 10.0
    assert json.loads((run / "metrics.json").read_text())["training"]["steps"] == 20


def test_every_run_writes_tensorboard_events_that_read_back(tmp_path, toy_csv, tiny_model, monkeypatch):
    """Loss, lr, throughput, memory and validation metrics as scalars; settings and test
    metrics as hparams; `--no-tensorboard` writes none. Read back by the record format
    tensorboardX writes. Every writer opens "in the same second" here: tensorboardX names files
    by the second, and a second writer once overwrote the training curves."""
    import types

    import tensorboardX.event_file_writer as event_file_writer

    from conftest import train_args
    from tunesmith.cli import main

    monkeypatch.setattr(event_file_writer, "time", types.SimpleNamespace(time=lambda: 1_767_225_600.0))

    assert main(train_args(toy_csv, tiny_model, tmp_path, "tb", "--epochs", "2")) == 0
    events = list((tmp_path / "tb" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    tags = set()
    from tensorboardX.proto import event_pb2

    for path in events:
        data = path.read_bytes()
        at = 0
        while at < len(data):  # TFRecord: length (8 bytes), its CRC (4), the event, its CRC (4)
            length = int.from_bytes(data[at:at + 8], "little")
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            tags |= {value.tag for value in event.summary.value}
            at += 16 + length
    assert {"train/loss", "train/lr", "train/samples_per_second", "train/memory_mb", "val/macro_f1"} <= tags, tags
    assert any(tag.startswith("test/") for tag in tags)  # the hparams' metrics
    assert main(train_args(toy_csv, tiny_model, tmp_path, "quiet", "--epochs", "1", "--no-tensorboard")) == 0
    assert not (tmp_path / "quiet" / "tensorboard").exists()


def test_a_run_that_learned_nothing_says_so_and_names_the_lr_to_try():
    from tunesmith.commands.train import learned_nothing

    flat = [{"step": 1, "loss": 0.4}, {"step": 2, "val_f1": 0.0}, {"step": 4, "val_f1": 0.0}]
    (line,) = learned_nothing(flat, "f1", True, 2e-3)
    assert line.startswith("warning: validation f1 was 0 at every evaluation") and "--lr 0.0005" in line
    assert learned_nothing(flat + [{"step": 6, "val_f1": 0.01}], "f1", True, 2e-3) == []
    assert learned_nothing(flat, "f1", False, 2e-3) == []  # lower-is-better metrics are not judged by zero
    assert learned_nothing([{"step": 1, "loss": 0.4}], "f1", True, 2e-3) == []  # never evaluated: nothing to say


def test_a_run_stopped_before_its_first_checkpoint_resumes_as_it_would_have_started(
        tiny_sentence_model, tmp_path, monkeypatch, capsys):
    """Ctrl-C during the starting model's validation (step 0: no checkpoint yet): `--resume`
    starts over, its head again starting as the probe, and ends where a straight run ends."""
    from tunesmith.tasks import TASKS

    data = write_csv(tmp_path / "toy.csv", make_rows(20))
    common = ("--method", "lora", "--epochs", "2")
    assert main(train_args(data, tiny_sentence_model, tmp_path, "straight", *common)) == 0
    task = TASKS["text-classification"]
    original = type(task).metrics

    def interrupted(self, *rest):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(type(task), "metrics", interrupted)
        assert main(train_args(data, tiny_sentence_model, tmp_path, "cut", *common)) == 130
    assert not (tmp_path / "cut" / "checkpoints" / "last").exists()
    assert type(task).metrics is original
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    assert "head: starts as the linear probe" in capsys.readouterr().out
    straight, resumed = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("straight", "cut"))
    assert resumed["val_best"] == straight["val_best"] and resumed["test"] == straight["test"]
