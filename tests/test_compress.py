"""`quantize`, `distill` and `prune`: each writes a run folder that predicts and serves like any
run, records where it came from, and reports its costs against its source."""

import json

import numpy as np
import pytest
import torch

from conftest import make_rows, train_args, write_csv
from tunesmith.cli import main
from tunesmith.inference import Predictor
from tunesmith.runs import Run

TEXTS = ["good good great", "bad awful terrible", "fine okay plain", "the movie was really wonderful and happy",
         "sad film", "average story quite fine"]


@pytest.fixture(scope="module")
def four_layer_model(tmp_path_factory) -> str:
    """The tiny word-level BERT with 4 layers, so a student can keep 2 of them."""
    from transformers import BertConfig, BertModel, BertTokenizer

    from conftest import CUES, FILLER

    folder = tmp_path_factory.mktemp("tiny-bert-4")
    words = sorted({w for cues in CUES.values() for w in cues} | set(FILLER) | {"unknownword"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)).save_pretrained(str(folder))
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, four_layer_model) -> Run:
    base = tmp_path_factory.mktemp("compress")
    data = write_csv(base / "toy.csv", make_rows(30))
    assert main(train_args(data, four_layer_model, base / "runs", "teacher", "--method", "full")) == 0
    return Run(base / "runs" / "teacher")


def probabilities(run: Run, backend: str = "auto") -> np.ndarray:
    return Predictor.from_run(run, backend).predict(TEXTS)


@pytest.fixture(scope="module")
def int8(teacher) -> Run:
    assert main(["quantize", str(teacher.path)]) == 0
    return Run(teacher.path.parent / "teacher-int8")


# int8 weights carry a rounding error of up to half a step (max|w| / 254) each; through this
# model's 4 small layers that moves the logits by a few hundredths, so its probabilities stay
# within 0.05 of fp32's and, on texts the model is sure about, pick the same label.
PROBABILITY_TOLERANCE = 0.05


def test_onnx_int8_run_answers_like_its_source_and_is_smaller(teacher, int8):
    expected, got = probabilities(teacher), probabilities(int8)
    assert np.abs(got - expected).max() < PROBABILITY_TOLERANCE
    assert (got.argmax(1) == expected.argmax(1)).all()
    facts = int8.compression()
    assert facts["backend"] == "onnx" and facts["lineage"][0]["kind"] == "quantize"
    assert not list(int8.model_dir.glob("*.safetensors"))  # runs on its int8 graph alone
    from onnx import load

    graph = load(str(int8.model_dir / "model.onnx"))
    assert any("Integer" in node.op_type or "Quantize" in node.op_type for node in graph.graph.node)
    costs = facts["costs"]
    for side in ("source", "compressed"):
        assert costs[side]["texts"] == len(teacher.split("test"))
        assert costs[side]["latency_p95_ms"] >= costs[side]["latency_p50_ms"] > 0
        assert costs[side]["file_per_s"] > 0 and costs[side]["peak_memory_mb"] > 0
    metrics = json.loads(int8.metrics_file.read_text())
    assert "| change |" in metrics["compression"]["table"]
    assert "Compression: quantize" in int8.report_file.read_text()


def test_static_and_torch_int8_stay_close_to_fp32(teacher):
    expected = probabilities(teacher)
    assert main(["quantize", str(teacher.path), "--mode", "static", "--per-channel", "--name", "static"]) == 0
    assert main(["quantize", str(teacher.path), "--backend", "torch", "--name", "torch-int8"]) == 0
    static, torch_int8 = Run(teacher.path.parent / "static"), Run(teacher.path.parent / "torch-int8")
    graph = __import__("onnx").load(str(static.model_dir / "model.onnx"))
    assert any(node.op_type == "QuantizeLinear" for node in graph.graph.node)  # fixed ranges: QDQ nodes
    assert np.abs(probabilities(static) - expected).max() < PROBABILITY_TOLERANCE
    model = Predictor.from_run(torch_int8).model
    assert any("quantized.dynamic" in type(m).__module__ for m in model.modules())  # int8 linear layers
    assert np.abs(probabilities(torch_int8) - expected).max() < PROBABILITY_TOLERANCE


def test_predict_and_serve_take_a_quantised_run(int8, tmp_path, capsys):
    data = write_csv(tmp_path / "in.csv", make_rows(3, seed=5), fields=("text",))
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(int8.path), data, "-o", str(out)]) == 0  # backend auto: its ONNX graph
    assert len(out.read_text().splitlines()) == 9
    assert main(["predict", str(int8.path), data, "-o", str(out), "--backend", "torch"]) == 2
    assert "holds only its quantised ONNX graph" in capsys.readouterr().err

    from fastapi.testclient import TestClient

    from tunesmith.serve.server import build_app
    from tunesmith.serve.settings import ServeSettings

    with TestClient(build_app(ServeSettings(run=str(int8.path))), base_url="http://localhost") as client:
        answer = client.post("/v1/predict", json={"inputs": TEXTS[:2]})
        assert answer.status_code == 200 and len(answer.json()) == 2
        info = client.get("/v1/model").json()
        assert info["backend"] == "onnx" and info["compression"] == ["quantize"]


def test_distilled_student_has_fewer_layers_and_loads_in_plain_transformers(teacher):
    from transformers import AutoModel

    assert main(["distill", str(teacher.path), "--student-layers", "2", "--epochs", "3", "--lr", "3e-3"]) == 0
    student_run = Run(teacher.path.parent / "teacher-2layers")
    assert json.loads((student_run.model_dir / "config.json").read_text())["num_hidden_layers"] == 2
    assert len(AutoModel.from_pretrained(str(student_run.model_dir)).encoder.layer) == 2  # no tunesmith code
    assert student_run.compression()["settings"]["teacher_layers_kept"] == [1, 3]
    assert not student_run.checkpoints.exists()



def test_distillation_lowers_the_students_loss_against_the_teacher(teacher, tmp_path):
    """Library level: a 1-layer student whose layer starts from noise learns the teacher's
    distributions (soft loss only) on the training texts."""
    from tunesmith.compress.distill import Lesson, Teacher, distillation_loss, student_features, train_student
    from tunesmith.compress.student import keep_layers, layer_list
    from tunesmith.data.long_text import LongText
    from tunesmith.methods import load_tuned

    from tunesmith.plan import settings_with

    cfg, task = settings_with(teacher.settings(), epochs=5, lr=3e-3), Predictor.from_run(teacher).task
    tokenizer = task.load_processor(str(teacher.model_dir), cfg)
    teacher_model = load_tuned(task, str(teacher.model_dir))
    student = keep_layers(teacher_model, 1)
    torch.manual_seed(1)
    for parameter in layer_list(student).parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    features = student_features(task, tokenizer, teacher_model, teacher.split("train"), teacher.labels(), 16,
                                LongText.of(cfg), [])
    soft_only = distillation_loss(task.problem_type, 2.0, 1.0)
    batch = features.batch(list(range(len(features))))
    with torch.no_grad():
        before = soft_only(student.eval(), batch)[0].item()
    run = Run(tmp_path / "student")
    run.path.mkdir()
    taught = Teacher(teacher, cfg, task, tokenizer, teacher_model)
    student = train_student(student, taught, run, Lesson(2.0, 1.0), log=lambda _: None)
    with torch.no_grad():
        after = soft_only(student, batch)[0].item()
    assert after < before / 2, (before, after)


def test_hidden_state_loss_is_zero_for_the_teachers_own_layers_and_ignores_padding(teacher):
    from tunesmith.compress.distill import distillation_loss, hidden_state_loss
    from tunesmith.compress.student import keep_layers
    from tunesmith.methods import load_tuned

    states = [torch.randn(2, 5, 8)]
    shifted = [states[0].clone()]
    shifted[0][1, 3:] += 10.0  # differs only where the mask says padding
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert hidden_state_loss(shifted, states, mask).item() == 0.0
    assert hidden_state_loss([states[0] * 0], states, mask).item() == pytest.approx(1.0)  # relative: 1 for zeros

    cfg, task = teacher.settings(), Predictor.from_run(teacher).task
    model = load_tuned(task, str(teacher.model_dir)).eval()
    tokenizer = task.load_processor(str(teacher.model_dir), cfg)
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    batch.pop("token_type_ids", None)
    batch["labels"], batch["teacher"] = torch.zeros(len(TEXTS), dtype=torch.long), model(**batch).logits.detach()
    for kept, layer_map in ((4, [0, 1, 2, 3]), (2, [1, 3])):
        student = keep_layers(model, kept).eval()
        loss = distillation_loss(task.problem_type, 2.0, 0.5, 1.0, student, model, layer_map)
        with torch.no_grad():
            hidden = loss(student, batch)[1]["hidden_loss"]
        assert (hidden < 1e-10) if kept == 4 else (hidden > 1e-3), (kept, hidden)  # a full copy matches exactly


def test_distill_with_the_hidden_state_loss_lowers_it_and_records_the_weight(teacher):
    assert main(["distill", str(teacher.path), "--student-layers", "2", "--epochs", "3", "--lr", "3e-3",
                 "--hidden-weight", "1", "--name", "hidden"]) == 0
    run = Run(teacher.path.parent / "hidden")
    assert run.compression()["settings"]["hidden_weight"] == 1.0
    history = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    hidden = [h["hidden_loss"] for h in history if "hidden_loss" in h]
    assert len(hidden) >= 3 and hidden[-1] < hidden[0], hidden
    assert main(["distill", str(teacher.path), "--hidden-weight", "-1"]) == 2


def test_an_interrupted_distillation_resumes_where_it_stopped_and_matches_a_straight_one(teacher, monkeypatch,
                                                                                          capsys):
    from conftest import interrupt_during_second_evaluation

    task = Predictor.from_run(teacher).task
    common = ["distill", str(teacher.path), "--student-layers", "2", "--epochs", "3", "--lr", "3e-3"]
    assert main([*common, "--name", "straight"]) == 0
    interrupt_during_second_evaluation(monkeypatch, task, [*common, "--name", "cut"])
    partial = teacher.path.parent / ".cut.partial"
    assert not (teacher.path.parent / "cut").exists() and (partial / "checkpoints" / "last").is_dir()
    assert "the same command continues" in capsys.readouterr().out
    assert main([*common, "--name", "cut"]) == 0
    assert "resumed from step" in capsys.readouterr().out
    assert not partial.exists()
    straight, resumed = (json.loads((teacher.path.parent / n / "metrics.json").read_text()) for n in ("straight", "cut"))
    assert resumed["test"] == straight["test"]

    def validation(name: str) -> list:
        history = (teacher.path.parent / name / "history.jsonl").read_text().splitlines()
        return [(h["step"], h["val_loss"]) for h in map(json.loads, history) if "val_loss" in h]

    assert validation("cut") == validation("straight") and len(validation("cut")) >= 3
    # Other settings do not resume someone else's partial run: they start over.
    interrupt_during_second_evaluation(monkeypatch, task, [*common, "--name", "other"])
    assert main([*common[:-2], "--lr", "1e-3", "--name", "other"]) == 0
    assert "resumed from step" not in capsys.readouterr().out


def test_a_mean_pooled_run_distils_and_prunes_into_smaller_plain_folders(tmp_path, tiny_sentence_model):
    """The mean-pooled head's run folder (body + classifier.safetensors) keeps its layout."""
    data = write_csv(tmp_path / "toy.csv", make_rows(20))
    assert main(train_args(data, tiny_sentence_model, tmp_path / "runs", "mean", "--method", "full",
                           "--epochs", "1")) == 0
    source = tmp_path / "runs" / "mean"
    assert main(["distill", str(source), "--student-layers", "1", "--epochs", "1"]) == 0
    assert main(["prune", str(source), "--sparsity", "0.5", "--epochs", "1"]) == 0
    for name, key, value in (("mean-1layers", "num_hidden_layers", 1), ("mean-pruned", "intermediate_size", 32)):
        model_dir = tmp_path / "runs" / name / "model"
        config = json.loads((model_dir / "config.json").read_text())
        assert config[key] == value and config["tunesmith_pooling"] == "mean"
        assert (model_dir / "classifier.safetensors").is_file()
        assert Predictor.from_run(Run(model_dir.parent)).predict(TEXTS).shape == (len(TEXTS), 3)


def test_pruned_model_has_smaller_shapes_and_still_loads_in_transformers(teacher):
    from transformers import AutoModel

    assert main(["prune", str(teacher.path), "--sparsity", "0.5", "--drop-layers", "1", "--lr", "3e-3"]) == 0
    pruned = Run(teacher.path.parent / "teacher-pruned")
    config = json.loads((pruned.model_dir / "config.json").read_text())
    assert config["intermediate_size"] == 32 and config["num_hidden_layers"] == 3
    body = AutoModel.from_pretrained(str(pruned.model_dir))
    assert body.encoder.layer[0].intermediate.dense.weight.shape == (32, 32)
    settings = pruned.compression()["settings"]
    assert settings["parameters"] < settings["source_parameters"]
    assert Predictor.from_run(pruned).predict(TEXTS).shape == (len(TEXTS), 3)


def test_chained_compression_records_lineage_and_int8_is_last(teacher, int8, capsys):
    assert main(["distill", str(teacher.path), "--student-layers", "1", "--epochs", "1", "--name", "one"]) == 0
    assert main(["quantize", str(teacher.path.parent / "one")]) == 0
    chain = Run(teacher.path.parent / "one-int8").compression()
    assert [step["kind"] for step in chain["lineage"]] == ["distill", "quantize"]
    assert chain["lineage"][0]["source"] == str(teacher.path.resolve())
    capsys.readouterr()
    for verb in (["quantize"], ["prune"], ["distill"]):
        assert main([*verb, str(int8.path)]) == 2
        assert "already quantised to int8" in capsys.readouterr().err


def test_unsupported_combinations_are_refused_before_any_work(teacher, tmp_path, capsys):
    before = sorted(p.name for p in teacher.path.parent.iterdir())
    refusals = [
        (["quantize", str(teacher.path), "--mode", "static", "--backend", "torch"], "needs --backend onnx"),
        (["distill", str(teacher.path), "--student-layers", "4"], "a student needs fewer"),
        (["distill", str(teacher.path), "--temperature", "0"], "--temperature 0"),
        (["prune", str(teacher.path), "--sparsity", "1.5"], "--sparsity 1.5"),
        (["prune", str(teacher.path), "--sparsity", "1.5", "--drop-layers", "1", "--name", "x"], "--sparsity 1.5"),
        (["prune", str(teacher.path), "--sparsity", "0"], "nothing to prune"),
        (["prune", str(teacher.path), "--drop-layers", "4", "--sparsity", "0.2", "--name", "x"], "--drop-layers 4"),
        (["quantize", str(tmp_path / "nothing")], "no such run folder"),
    ]
    for args, message in refusals:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in teacher.path.parent.iterdir()) == before  # nothing written
    assert not list(teacher.path.parent.glob(".*.tmp"))  # no half-built run folder (io.atomic_dir's name)


def test_ner_runs_export_and_quantise_with_onnx_or_torch_but_are_not_distilled(tmp_path, tiny_model, capsys):
    rows = []
    for row in make_rows(20):  # distinct sentences; a cue word is the entity
        words = row["text"].split()
        rows.append({"tokens": words, "tags": ["B-X" if w in ("good", "great") else "O" for w in words]})
    data = tmp_path / "ner.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = train_args(str(data), tiny_model, tmp_path / "runs", "ner", "--task", "token-classification", "--epochs", "1")
    assert main(args) == 0
    run = tmp_path / "runs" / "ner"
    assert main(["distill", str(run)]) == 2
    assert "token-classification runs cannot be distilled yet" in capsys.readouterr().err

    words = [["good", "movie"], ["film", "good", "and", "the", "plot"], ["a"]]

    def probabilities(path, backend="auto"):
        return np.concatenate(Predictor.from_run(Run(path), backend).predict(words))

    source = probabilities(run)
    assert main(["export", str(run)]) == 0  # per-token logits, batch and length dynamic
    np.testing.assert_allclose(probabilities(run, "onnx"), source, atol=1e-5)
    capsys.readouterr()
    assert main(["quantize", str(run)]) == 0
    out = capsys.readouterr().out
    assert "ONNX export (model.onnx, written after its weights)" in out and "exporting" not in out  # no second export
    onnx_int8 = Run(tmp_path / "runs" / "ner-int8")
    assert onnx_int8.compression()["backend"] == "onnx"
    assert main(["quantize", str(run), "--backend", "torch", "--name", "ner-torch-int8"]) == 0
    assert Run(tmp_path / "runs" / "ner-torch-int8").compression()["torch_int8"] is True
    for int8 in (onnx_int8.path, tmp_path / "runs" / "ner-torch-int8"):
        np.testing.assert_allclose(probabilities(int8), source, atol=PROBABILITY_TOLERANCE)


def test_quantize_reuses_an_export_only_when_it_is_newer_than_the_weights(tmp_path):
    import os

    from tunesmith.compress.onnx_export import current_export

    run = Run(tmp_path / "r")
    run.model_dir.mkdir(parents=True)
    weights, exported = run.model_dir / "model.safetensors", run.model_dir / "model.onnx"
    weights.write_bytes(b"w")
    assert current_export(run) is None  # nothing exported
    exported.write_bytes(b"g")
    os.utime(weights, (1_000, 1_000))
    os.utime(exported, (2_000, 2_000))
    assert current_export(run) == exported
    os.utime(weights, (3_000, 3_000))  # weights written after the export: it is stale
    assert current_export(run) is None


def test_a_run_that_cannot_be_measured_is_named_and_no_measuring_process_is_left(teacher, tmp_path):
    """The measuring processes load together and wait for their turn: one that fails while
    loading must not leave the others waiting for a turn that never comes."""
    import psutil

    from tunesmith.compress import costs
    from tunesmith.errors import UserError

    missing = tmp_path / "missing-run"
    with pytest.raises(UserError, match="missing-run: measuring prediction costs failed"):
        costs.measure([teacher.path, missing])
    assert not [c for c in psutil.Process().children(recursive=True) if "tunesmith.compress.costs" in " ".join(c.cmdline())]


def test_compression_verbs_and_flags_are_in_help(capsys):
    for verb, flags in (("quantize", ("--mode", "--per-channel", "--backend")),
                        ("distill", ("--student-layers", "--unlabeled", "--temperature", "--alpha")),
                        ("prune", ("--sparsity", "--drop-layers"))):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        text = capsys.readouterr().out
        assert all(flag in text for flag in flags), verb


def test_compare_runs_measures_a_run_and_its_compressed_copy_side_by_side(teacher, int8, tmp_path, capsys):
    assert main(["compare", "--runs", f"{teacher.path},{int8.path}", "--output-folder", str(tmp_path / "c")]) == 0
    table = (tmp_path / "c" / "compare-runs.md").read_text()
    assert "| teacher | torch |" in table and "| teacher-int8 | onnx |" in table and "| change |" in table
    rows = json.loads((tmp_path / "c" / "compare-runs.json").read_text())
    assert [r["backend"] for r in rows] == ["torch", "onnx"] and all(r["file_per_s"] > 0 for r in rows)
    capsys.readouterr()
    assert main(["compare", "--runs", str(teacher.path)]) == 2
    assert "at least two run folders" in capsys.readouterr().err


def test_kill_9_in_the_middle_of_a_distillation_then_the_same_command_finishes_it(teacher, tmp_path):
    """A compression killed mid-training (no code runs: no Ctrl-C handler) leaves its partial
    folder; the same command resumes it and ends with one complete run folder and nothing else."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    command = ["distill", str(teacher.path), "--student-layers", "2", "--epochs", "4", "--lr", "3e-3",
               "--output", str(out), "--name", "killed"]
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", *command], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    last = out / ".killed.partial" / "checkpoints" / "last" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not last.is_file():
        time.sleep(0.05)
    assert proc.poll() is None, "the distillation ended before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "killed").exists()
    assert main(command) == 0  # the same command continues from the last checkpoint and finishes
    assert json.loads((out / "killed" / "metrics.json").read_text())["test"]
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".lock")) == ["killed"]


def test_every_model_folder_has_a_model_card_the_hub_can_read(teacher, int8):
    from huggingface_hub import ModelCard

    for run in (teacher, int8):
        card = ModelCard.load(run.model_dir / "README.md")
        metrics = json.loads(run.metrics_file.read_text())
        assert card.data.pipeline_tag == "text-classification" and card.data.library_name == "transformers"
        assert "tunesmith" in card.data.tags and card.data.language == ["en"]
        scored = {(r.metric_name, r.metric_value) for r in card.data.eval_results}
        assert ("test accuracy", round(metrics["test"]["accuracy"], 4)) in scored
        assert f"| accuracy | {metrics['test']['accuracy']:.4f} |" in card.text
        assert "AutoModelForSequenceClassification" in card.text
        train_texts = [json.loads(line)["text"] for line in (run.data_dir / "train.jsonl").read_text().splitlines()]
        assert not any(text in card.content for text in train_texts)  # labels and counts only, never the data
