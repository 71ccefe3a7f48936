"""What a new user on a new machine hits first: task defaults that fit the task, --max-length
held to the model, texts with Unicode line separators, a full disk, a second resume, and a
memory estimate that shrinks or refuses a run before the kernel kills it."""

from __future__ import annotations

import errno
import json

import pytest
import yaml

from conftest import make_rows, train_args, write_csv
from tunesmith.plan import learning_rate
from tunesmith.cli import main
from tunesmith.config import build_config


def _one_error_line(capsys) -> str:
    """The one `error:` line, last on stderr (a progress bar may come before it)."""
    err = capsys.readouterr().err
    lines = [line for line in err.strip().split("\n") if line.strip()]
    errors = [line for line in lines if "error: " in line]
    assert len(errors) == 1 and lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


# ---- defaults per task -------------------------------------------------------------------------

def test_each_task_gets_its_own_defaults_and_what_the_user_gives_wins():
    image = build_config({"task": "image-classification"}, "flags")
    assert image.method == "full" and learning_rate(image, None) == 1e-3  # LoRA cannot adapt the default CNN
    assert learning_rate(build_config({"task": "image-classification", "model": "some/vit"}, "flags"), None) == 5e-5
    lm = build_config({"task": "causal-lm"}, "flags")
    assert (lm.batch_size, lm.grad_accum, lm.method) == (2, 16, "lora")
    pairs = build_config({"task": "preference"}, "flags")
    assert pairs.batch_size * pairs.grad_accum == 16
    given = build_config({"task": "causal-lm", "batch_size": 4, "method": "full"}, "flags")
    assert (given.batch_size, given.grad_accum, given.method) == (4, 1, "full")  # a given batch is the step
    assert build_config({}, "flags").batch_size == 32


# ---- lengths -----------------------------------------------------------------------------------

def test_max_length_above_the_models_positions_is_refused_before_any_folder(tmp_path, toy_csv, tiny_model, capsys):
    runs = tmp_path / "runs"
    args = train_args(toy_csv, tiny_model, runs)
    args[args.index("--max-length") + 1] = "100"  # the tiny BERT has 64 positions
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "--max-length 100" in line and "at most 64" in line
    assert not runs.exists()


def test_check_never_suggests_more_than_the_model_reads(tmp_path, tiny_model, capsys):
    rows = [{"text": " ".join(["good"] * 90 + [str(i)]), "label": "positive" if i % 2 else "negative"}
            for i in range(40)]
    data = write_csv(tmp_path / "long.csv", rows)
    assert main(["check", data, "--model", tiny_model, "--max-length", "16", "--no-quality"]) == 0
    out = capsys.readouterr().out
    assert "consider --max-length 64" in out and "reads at most 64" in out and "--long-text chunk" in out


# ---- Unicode line separators inside texts -------------------------------------------------------

def test_texts_with_unicode_line_separators_survive_the_run_folder(tmp_path, tiny_model):
    from tunesmith.runs import Run

    rows = make_rows(12)
    for i, row in enumerate(rows):
        row["text"] += ["\u2028new", "\u2029para", "\x85next", ""][i % 4]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert main(train_args(str(data), tiny_model, tmp_path / "runs", "r", "--epochs", "1")) == 0
    run = Run(tmp_path / "runs" / "r")
    parts = [run.split(name) for name in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(rows)
    assert any("\u2028" in t for p in parts for t in p.texts)
    assert main(["eval", str(run.path)]) == 0  # rescoring reads the test split back


# ---- a full disk, a second resume ---------------------------------------------------------------

def test_a_full_disk_is_one_line_and_leaves_no_temporary_files(tmp_path, toy_csv, tiny_model, capsys, monkeypatch):
    from tunesmith.train import checkpoint

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    assert main(train_args(toy_csv, tiny_model, tmp_path / "runs", "r", "--epochs", "1")) == 2
    assert "disk is full" in _one_error_line(capsys)
    leftovers = [p for p in (tmp_path / "runs" / "r" / "checkpoints").glob(".*")]
    assert leftovers == []


def test_a_second_resume_of_a_training_run_is_refused(tmp_path, toy_csv, tiny_model, capsys, monkeypatch):
    from conftest import interrupt_during_second_evaluation
    from tunesmith.runs import Run, training_lock
    from tunesmith.tasks import TASKS

    args = train_args(toy_csv, tiny_model, tmp_path / "runs", "r", "--eval-every", "2")
    interrupt_during_second_evaluation(monkeypatch, TASKS["text-classification"], args)
    run = Run(tmp_path / "runs" / "r")
    capsys.readouterr()
    with training_lock(run):  # another process is training this run
        assert main(["train", "--resume", str(run.path)]) == 2
        assert "already training" in _one_error_line(capsys)
    assert main(["train", "--resume", str(run.path)]) == 0  # once it is free, resuming works
    assert run.finished


# ---- memory --------------------------------------------------------------------------------------

def test_train_shrinks_the_micro_batch_when_memory_is_short_and_refuses_when_one_row_cannot_fit(
        tmp_path, toy_csv, tiny_model, capsys, monkeypatch):
    from tunesmith.train import budget

    shape = budget.shape_of(tiny_model)
    # Every toy text is longer than 4 tokens, so a row is 4 tokens.
    need = {n: budget.estimate(shape, shape["parameters"], n, 4, 0, False).peak_bytes for n in (8, 2, 1)}
    monkeypatch.setattr(budget, "available_memory", lambda: (need[2] + need[1]) / 2)  # room for 1 row, not 2
    assert main(train_args(toy_csv, tiny_model, tmp_path / "runs", "r", "--epochs", "1", "--max-length", "4")) == 0
    out = capsys.readouterr().out
    assert "micro-batch 8 -> 1 with --grad-accum 1 -> 8" in out
    saved = yaml.safe_load((tmp_path / "runs" / "r" / "config.yaml").read_text())
    assert (saved["batch_size"], saved["grad_accum"]) == (1, 8)  # what ran is what config.yaml re-runs

    monkeypatch.setattr(budget, "available_memory", lambda: need[1] / 2)
    assert main(train_args(toy_csv, tiny_model, tmp_path / "runs", "r2", "--epochs", "1", "--max-length", "4")) == 2
    assert "needs more memory" in _one_error_line(capsys)
    assert not (tmp_path / "runs" / "r2").exists()


def test_check_prints_the_estimate(tmp_path, toy_csv, tiny_model, capsys):
    assert main(["check", toy_csv, "--model", tiny_model, "--lists", str(tmp_path / "lists")]) == 0
    assert "estimate: peak memory about" in capsys.readouterr().out


def test_the_time_estimate_counts_what_the_method_computes(tiny_model, monkeypatch):
    """A frozen body runs forward only; full fine-tuning adds a backward of twice the work: the
    epoch estimate follows each method's cost (train printed the full cost for every method, and
    LoRA's estimate ran 4x over its measured time on tweets-sentiment)."""
    from tunesmith.config import TrainConfig
    from tunesmith.methods import METHODS
    from tunesmith.tasks import TASKS
    from tunesmith.train import budget

    monkeypatch.setattr(budget, "measured_flops", lambda: 1e9)
    real_estimate, made = budget.estimate, []
    monkeypatch.setattr(budget, "estimate", lambda *a, **k: made.append(real_estimate(*a, **k)) or made[-1])

    def seconds(method: str) -> float:
        cfg = TrainConfig(data="x.csv", model=tiny_model, method=method)
        line = budget.plan(cfg, TASKS["text-classification"], tiny_model, {"p50": 20, "p99": 40}, rows=100_000)[0]
        assert "per epoch on this machine" in line
        return made[-1].epoch_seconds

    full, lora, freeze = seconds("full"), seconds("lora"), seconds("freeze")
    assert freeze < lora < full
    assert full / freeze == pytest.approx(METHODS["full"].relative_cost / METHODS["freeze"].relative_cost)

