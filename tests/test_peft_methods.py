"""adalora, prefix, prompt and ptuning: each trains only what it reports, leaves the base
weights untouched, and a saved run loads back with what it learned."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import train_args
from tunesmith.cli import main
from tunesmith.config import build_config
from tunesmith.errors import UserError
from tunesmith.methods import METHODS
from tunesmith.tasks import TASKS


TEXT = TASKS["text-classification"]  # the task every model here is built for


def _model(tiny_model):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3)


def _cfg(**values):
    return build_config({"task": "text-classification", "model": "minilm", **values}, "test")


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["prompt", "ptuning", "prefix"])
def test_prompt_methods_train_the_prompt_and_head_only_and_reload_with_the_prompt(tmp_path, tiny_model, toy_csv, method):
    from transformers import AutoModelForSequenceClassification

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    model = METHODS[method].apply(_model(tiny_model), _cfg(method=method, prompt_tokens=4), TEXT)
    trainable = _trainable(model)
    assert any(n.startswith("prompt_encoder.") for n in trainable)
    assert all(n.startswith("prompt_encoder.") or ".classifier." in n for n in trainable), trainable

    assert main(train_args(toy_csv, tiny_model, tmp_path, method, "--method", method, "--epochs", "2",
                           "--prompt-tokens", "4")) == 0
    run = Run(tmp_path / method)
    saved = load_file(str(run.model_dir / "model.safetensors"))
    original = load_file(str(Path(tiny_model) / "model.safetensors"))
    for key, value in original.items():  # the body is exactly the pretrained one
        assert torch.equal(saved[f"bert.{key}"], value), key
    assert any(k.startswith("tunesmith_prompt.") for k in saved)
    assert json.loads((run.model_dir / "config.json").read_text())["tunesmith_prompt"]["num_virtual_tokens"] == 4

    texts = [row["text"] for row in map(json.loads, (run.data_dir / "test.jsonl").read_text().splitlines())][:8]
    with_prompt = Predictor.from_run(run)
    assert type(with_prompt.model).__name__.startswith("PeftModel")
    without = AutoModelForSequenceClassification.from_pretrained(str(run.model_dir))
    plain = Predictor(without, with_prompt.tokenizer, with_prompt.labels, with_prompt.max_length, with_prompt.task)
    # The same head and body: only the learned prompt can make the outputs differ.
    assert not np.allclose(with_prompt.predict(texts), plain.predict(texts), atol=1e-4)
    metrics = json.loads(run.metrics_file.read_text())
    assert metrics["parameters"]["trainable_pct"] < 100


def test_prompt_methods_refuse_token_level_tasks_before_writing_anything(tmp_path, tiny_model):
    with pytest.raises(UserError, match="--method prefix"):
        METHODS["prefix"].check(build_config({"task": "token-classification", "method": "prefix"}, "test"),
                                TASKS["token-classification"])
    assert not (tmp_path / "runs").exists()


def test_adalora_reallocates_ranks_during_training_and_merges(tmp_path, tiny_model, toy_csv):
    model = METHODS["adalora"].apply(_model(tiny_model), _cfg(method="adalora", lora_r=2), TEXT)
    trainable = _trainable(model)
    assert any("lora_E" in n for n in trainable)
    assert all("lora_" in n or ".classifier." in n for n in trainable), trainable

    # Through the loop: on_step sets the schedule and prunes toward an average rank of 2 (from 3).
    assert main(train_args(toy_csv, tiny_model, tmp_path, "ada", "--method", "adalora", "--lora-r", "2",
                           "--epochs", "3")) == 0
    config = json.loads((tmp_path / "ada" / "adapter" / "adapter_config.json").read_text())
    ranks = [sum(mask) for mask in config["rank_pattern"].values()]
    assert config["peft_type"] == "ADALORA" and ranks
    assert sum(ranks) <= 2 * len(ranks) < 3 * len(ranks)  # the budget shrank from init_r=3 to target_r=2
    tuned = load_file(str(tmp_path / "ada" / "model" / "model.safetensors"))
    assert not any("lora_" in k for k in tuned)  # merged into plain transformers weights
