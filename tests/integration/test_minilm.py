"""Real MiniLM on real data, with accuracy floors (skip when the model or data is absent)."""

import json

import pandas as pd
import pytest

from realdata import needs_dataset, needs_minilm
from tunesmith.cli import main

pytestmark = pytest.mark.integration


def test_lora_on_sst2_subset_beats_floor(tmp_path):
    needs_minilm()
    sst2 = needs_dataset("sst2")
    train = pd.read_csv(sst2 / "train.tsv", sep="\t", quoting=3, dtype=str, keep_default_na=False)
    train.sample(n=2000, random_state=0).to_csv(tmp_path / "train.csv", index=False)
    code = main(["train", "--data", str(tmp_path / "train.csv"), "--test-data", str(sst2 / "dev.tsv"),
                 "--method", "lora", "--lr", "1e-3", "--epochs", "1", "--max-length", "64", "--no-baseline",
                 "--output", str(tmp_path / "runs"), "--name", "sst2"])
    assert code == 0
    metrics = json.loads((tmp_path / "runs" / "sst2" / "metrics.json").read_text())
    assert metrics["test"]["count"] == 872  # the whole official dev set, never trained on
    # 2,000 sentences, one epoch: measured 0.775 (seed 42, 2-core CPU); chance is 0.50 and the
    # untuned linear probe ~0.80 on full data. Full data reaches 0.89 (docs/benchmarks.md).
    assert metrics["test"]["accuracy"] >= 0.75


def test_check_on_real_data(capsys):
    needs_minilm()
    sst2 = needs_dataset("sst2")
    assert main(["check", str(sst2 / "dev.tsv")]) == 0
    out = capsys.readouterr().out
    assert "labels (2)" in out and "token lengths" in out
