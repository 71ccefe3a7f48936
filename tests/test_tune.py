"""`tunesmith tune`: the search space, trials as runs, pruning, resuming, shared storage, best.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_rows, write_csv

optuna = pytest.importorskip("optuna")

from tunesmith.plan import learning_rate
from tunesmith.cli import main  # noqa: E402
from tunesmith.errors import UserError  # noqa: E402
from tunesmith.search.space import parse_space, suggest  # noqa: E402
from tunesmith.durations import parse_duration  # noqa: E402

def _config(tmp_path, tiny_sentence_model, search: dict | None, **extra) -> str:
    data = write_csv(tmp_path / "toy.csv", make_rows(40))
    values = {"data": data, "model": tiny_sentence_model, "method": "lora", "max_length": 16, "batch_size": 8, "epochs": 3,
              "seed": 0, "output": str(tmp_path / "runs"), **extra}
    if search is not None:
        values["search"] = search
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _study(folder: Path, url: str | None = None):
    from tunesmith.search.study import sqlalchemy_url

    return optuna.load_study(study_name=folder.name, storage=sqlalchemy_url(url or f"sqlite:///{folder / 'study.db'}"))


# ---- the search space -----------------------------------------------------------------------

def test_space_reads_ranges_choices_and_yaml_exponents():
    space = parse_space({"lr": {"low": "1e-5", "high": "1e-3", "log": True}, "epochs": {"low": 1, "high": 4},
                         "warmup_ratio": {"low": 0.0, "high": 0.2, "step": 0.05}, "lora_r": [4, 8]}, "c.yaml")
    assert space["lr"].low == 1e-5 and space["lr"].log and not space["lr"].is_int
    assert space["epochs"].is_int and not space["warmup_ratio"].is_int
    assert space["warmup_ratio"].grid() == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert space["lora_r"].grid() == [4, 8]


@pytest.mark.parametrize("block, fragment", [
    ({"learning_rate": [1e-4]}, "search.learning_rate: not a training key"),
    ({"data": ["a.csv", "b.csv"]}, "cannot be searched"),
    ({"seed": [1, 2]}, "cannot be searched"),
    ({"lr": {"low": 1e-3, "high": 1e-5}}, "low (0.001) must be below high"),
    ({"lr": {"low": 0, "high": 1e-3, "log": True}}, "log-scale range needs low > 0"),
    ({"lr": {"low": 1e-5}}, "needs both low and high"),
    ({"lr": {"low": 1e-5, "high": 1e-3, "scale": "log"}}, "unknown scale"),
    ({"lr": "fast"}, "give a list of choices or a range"),
    ({"lr": {"low": "small", "high": 1e-3}}, "search.lr.low: 'small' is not a number"),
    ({"lora_r": []}, "the list of choices is empty"),
])
def test_space_refuses_what_it_cannot_search(block, fragment):
    with pytest.raises(UserError) as err:
        parse_space(block, "c.yaml")
    assert fragment in str(err.value)


def test_grid_needs_a_step_for_ranges():
    with pytest.raises(UserError, match="--sampler grid needs choices or a step"):
        parse_space({"lr": {"low": 1e-5, "high": 1e-3}}, "c.yaml")["lr"].grid()


def test_a_trial_suggests_only_the_keys_its_method_reads():
    space = parse_space({"method": ["lora", "adapter"], "lora_r": [4, 16], "adapter_size": [8, 32]}, "c.yaml")
    base = {"task": "text-classification", "lora_alpha": 32.0}  # a lora key in the shared settings
    adapter = suggest(optuna.trial.FixedTrial({"method": "adapter", "adapter_size": 8}), space, base)
    assert adapter == {"task": "text-classification", "method": "adapter", "adapter_size": 8}
    lora = suggest(optuna.trial.FixedTrial({"method": "lora", "lora_r": 16}), space, base)
    assert lora == {"task": "text-classification", "method": "lora", "lora_r": 16, "lora_alpha": 32.0}


def test_durations():
    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400 and parse_duration("90") == 90
    with pytest.raises(UserError, match="like 30m"):
        parse_duration("half an hour")


def test_each_method_declares_a_default_space():
    from tunesmith.config import build_config
    from tunesmith.search.space import default_space

    lora = default_space(build_config({"method": "lora"}, "t"))
    assert set(lora) == {"lr", "lora_r"} and lora["lr"].low < 5e-4 < lora["lr"].high and lora["lr"].log
    assert set(default_space(build_config({"method": "full"}, "t"))) == {"lr"}
    with pytest.raises(UserError, match="trains nothing"):
        default_space(build_config({"method": "zero-shot"}, "t"))


def test_the_default_lr_range_centres_on_the_rate_train_would_choose_for_the_data():
    """LoRA's rate follows the run's length, so 4x either side of its one 5e-4 default would put a
    short run's 2e-3 at the range's top edge."""
    from tunesmith.config import build_config
    from tunesmith.search.space import default_space

    cfg = build_config({"method": "lora"}, "t")
    short, long = (default_space(cfg, rows)["lr"] for rows in (800, 200_000))
    assert (short.low, short.high) == (5e-4, 8e-3)  # 2e-3: 75 steps of 32 over 3 epochs
    assert (long.low, long.high) == (1.3e-4, 2e-3)  # 5e-4: the floor, 18,750 steps
    ner = default_space(build_config({"method": "lora", "task": "token-classification"}, "t"), 800)["lr"]
    assert ner.low < learning_rate(build_config({"method": "lora", "task": "token-classification"}, "t"), None) < ner.high


# ---- studies ------------------------------------------------------------------------------------

def test_a_study_selects_on_validation_scores_test_once_and_best_yaml_reruns(tmp_path, tiny_sentence_model, capsys):
    config = _config(tmp_path, tiny_sentence_model, {"lr": {"low": 1e-3, "high": 1e-2, "log": True}})
    assert main(["tune", config, "--trials", "3", "--sampler", "random", "--pruner", "none",
                 "--sampler-seed", "0"]) == 0
    folder = tmp_path / "runs" / "tune-study"
    study = _study(folder)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    best = Path(study.best_trial.user_attrs["run"])
    for trial in study.trials:
        run = Path(trial.user_attrs["run"])
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["val_best"]["macro_f1"] == pytest.approx(trial.value)
        assert not (run / "baseline.json").exists()  # trials never look at the test split ...
        if run == best:
            assert isinstance(metrics["test"]["macro_f1"], float)  # ... only the winner, once, at the end
        else:
            assert metrics["test"] == {}
    rows = (folder / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,value") and len(rows) == 4
    report = (folder / "report.html").read_text()
    assert "Optimisation history" in report and f"Best trial: {study.best_trial.number}" in report
    out = capsys.readouterr().out
    assert f"best: trial {study.best_trial.number} val macro_f1 {study.best_value:.4f}" in out

    # best.yaml is a plain training config: re-running it gives the same validation score.
    best_yaml = folder / "best.yaml"
    values = yaml.safe_load(best_yaml.read_text())
    assert values["lr"] == pytest.approx(study.best_params["lr"]) and "name" not in values
    assert main(["train", str(best_yaml), "--output", str(tmp_path / "again"), "--name", "rerun"]) == 0
    rerun = json.loads((tmp_path / "again" / "rerun" / "metrics.json").read_text())
    assert rerun["val_best"]["macro_f1"] == pytest.approx(study.best_value)


def test_the_pruner_stops_a_trial_that_trails_after_its_first_evaluation(tmp_path, tiny_sentence_model):
    """Three good trials, then one whose learning rate wrecks the model: the median rule stops
    it after its first evaluation instead of training it for every epoch."""
    from tunesmith.commands.train import train
    from tunesmith.search.study import StudySpec, open_study, run_worker

    config = _config(tmp_path, tiny_sentence_model, None)
    values = yaml.safe_load(Path(config).read_text())
    spec = StudySpec(values=values, space=parse_space({"lr": [1e-3, 30.0]}, "t"), folder=tmp_path / "study",
                     trials=4, pruner="median")
    study = open_study(spec, "maximize")
    for lr in (1e-3, 1e-3, 1e-3, 30.0):
        study.enqueue_trial({"lr": lr})
    run_worker(spec, train, "macro_f1", "maximize", log=lambda _: None)
    states = [t.state.name for t in _study(spec.folder).trials]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    pruned = _study(spec.folder).trials[-1]
    assert pruned.last_step == 1  # one evaluation of the three epochs
    assert not (Path(pruned.user_attrs["run"]) / "checkpoints").exists()


def test_the_same_command_continues_an_interrupted_study(tmp_path, tiny_sentence_model, monkeypatch):
    """Ctrl-C during the second trial: the command exits 130, the first trial is kept, and the
    same command again finishes the study without redoing it."""
    from tunesmith.tasks import TASKS

    config = _config(tmp_path, tiny_sentence_model, {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}, epochs=2)
    args = ["tune", config, "--trials", "3", "--pruner", "none", "--sampler-seed", "1"]
    task = TASKS["text-classification"]
    calls = {"n": 0}
    original = type(task).metrics

    def interrupting(self, *rest):
        calls["n"] += 1
        if calls["n"] == 4:  # trial 0 evaluates three times (its start, two epochs); trial 1 is cut at its start
            raise KeyboardInterrupt
        return original(self, *rest)

    with monkeypatch.context() as patched:
        patched.setattr(type(task), "metrics", interrupting)
        assert main(args) == 130
    folder = tmp_path / "runs" / "tune-study"
    first = _study(folder).trials
    assert [t.state.name for t in first] == ["COMPLETE", "FAIL"]

    assert main(args) == 0
    trials = _study(folder).trials
    assert trials[0].value == first[0].value and trials[0].params == first[0].params
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3
    assert sorted(p.name for p in (folder / "trials").iterdir() if (p / "metrics.json").is_file()) == \
        sorted(Path(t.user_attrs["run"]).name for t in trials if t.state.name == "COMPLETE")


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_two_worker_processes_share_one_storage_without_losing_or_repeating_trials(tmp_path, tiny_sentence_model,
                                                                                   storage, request):
    config = _config(tmp_path, tiny_sentence_model, {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}, epochs=1)
    env = {**os.environ, "TUNESMITH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "tunesmith", "tune", config, "--trials", "4", "--pruner", "none"]
    commands, url = [command, command], None
    if storage == "postgresql":
        # Two machines: each worker has its own folder (no shared lock file), one study in the
        # database, named by the folder. A plain postgresql:// URL, as a user writes it.
        url = request.getfixturevalue("postgres_database")()
        (tmp_path / "machine2").mkdir()
        elsewhere = _config(tmp_path / "machine2", tiny_sentence_model, {"lr": {"low": 1e-3, "high": 1e-2, "log": True}},
                            epochs=1)
        commands = [command + ["--storage", url], command[:4] + [elsewhere] + command[5:] + ["--storage", url]]
    workers = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for c in commands]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = _study(tmp_path / "runs" / "tune-study", url).trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # none lost
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert 4 <= len(finished) <= 5  # the last trial can start in both workers at once: at most one over
    folders = [t.user_attrs["run"] for t in finished]
    assert len(set(folders)) == len(folders)  # none trained twice into one folder
    assert all((Path(f) / "metrics.json").is_file() for f in folders)
    started = {out.count("trial ") for out in outputs}
    assert all(n > 0 for n in started), outputs  # both workers ran trials


def test_keep_best_removes_the_other_trial_folders(tmp_path, tiny_sentence_model):
    config = _config(tmp_path, tiny_sentence_model, {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}, epochs=1)
    assert main(["tune", config, "--trials", "2", "--pruner", "none", "--keep", "best"]) == 0
    folder = tmp_path / "runs" / "tune-study"
    best = Path(_study(folder).best_trial.user_attrs["run"])
    assert [p for p in (folder / "trials").iterdir()] == [best]


def test_bad_flags_and_configs_fail_before_any_trial(tmp_path, tiny_sentence_model, capsys):
    config = _config(tmp_path, tiny_sentence_model, {"lr": {"low": 1e-3, "high": 1e-2}})
    assert main(["tune", config, "--sampler", "grid"]) == 2
    assert "--sampler grid needs choices or a step" in capsys.readouterr().err
    assert main(["tune", config, "--timeout", "soon"]) == 2
    assert "--timeout soon" in capsys.readouterr().err
    assert main(["tune", str(tmp_path / "missing.csv"), "--model", tiny_sentence_model]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_workers_on_several_machines_wait_for_each_other_in_the_database(tmp_path, postgres_database):
    """A PostgreSQL storage is shared by machines that share no folder: the worker that creates
    the tables and the study holds a lock in the database, and the others wait for it."""
    import threading

    import psycopg

    from tunesmith.search.study import STUDY_LOCK_KEY, StudySpec, open_study

    url = postgres_database()
    spec = StudySpec(values={}, space=parse_space({"lr": {"low": 1e-3, "high": 1e-2}}, "c.yaml"),
                     folder=tmp_path / "study", storage=url)
    opened = []
    with psycopg.connect(url, autocommit=True) as other_machine:
        other_machine.execute("SELECT pg_advisory_lock(%s)", (STUDY_LOCK_KEY,))  # another worker is creating
        worker = threading.Thread(target=lambda: opened.append(open_study(spec, "maximize")))
        worker.start()
        worker.join(timeout=3)
        assert worker.is_alive() and not opened  # waiting, not racing it
        tables = other_machine.execute("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'studies'").fetchone()[0]
        assert tables == 0
        other_machine.execute("SELECT pg_advisory_unlock(%s)", (STUDY_LOCK_KEY,))
        worker.join(timeout=60)
    assert opened and opened[0].study_name == "study"
