"""plan.resolve: a run's settings resolved once, from the data, each with its reason."""

import pytest
from pydantic import ValidationError

from tunesmith.config import build_config
from tunesmith.errors import UserError
from tunesmith.plan import resolve


def splits_of(rows: int, pair_col=None):
    """What the plan reads of the data: the training rows and their texts, the second text column."""
    return _Splits([f"text number {i}" for i in range(rows)], pair_col)


class _Splits:
    def __init__(self, texts, pair_col):
        self.train = _Part(texts)
        self.pair_col = pair_col


class _Part(list):
    @property
    def texts(self):
        return list(self)


def test_every_default_is_filled_with_its_reason_and_the_plan_is_frozen(tiny_model):
    cfg = build_config({"data": "x.csv", "model": tiny_model, "method": "lora"}, "flags")
    plan = resolve(cfg, splits_of(300, pair_col="text_b"))
    settings = plan.settings
    assert settings.lr == 2e-3 and settings.epochs == 10.0  # 10 steps a pass: LoRA's short-run rate, 100 steps
    assert settings.max_length == 64 and settings.metric == "macro_f1" and settings.text_pair_col == "text_b"
    assert set(plan.reasons) >= {"model", "epochs", "lr", "max_length", "metric", "batch_size"}
    assert plan.reasons["model"] == "given" and "100 optimizer steps" in plan.reasons["epochs"]
    assert plan.notes["max_length"] == f"max_length 64: the most {tiny_model} reads"  # the task's 128, lowered
    assert "lr: 0.002" in plan.notes["lr"] and "epochs: 10" in plan.notes["epochs"]
    with pytest.raises(ValidationError, match="frozen"):
        settings.lr = 1.0
    assert cfg.lr is None and cfg.epochs is None  # the validated config is never changed


def test_a_resolved_plan_resolves_to_itself(tiny_model):
    """A resumed run reads its config.yaml (the plan) and resolves it again: nothing moves."""
    cfg = build_config({"data": "x.csv", "model": tiny_model, "method": "lora"}, "flags")
    first = resolve(cfg, splits_of(300)).settings
    again = resolve(build_config(first.model_dump(), "config.yaml"), splits_of(300)).settings
    assert again == first


def test_the_rate_follows_the_data_a_run_sees(tiny_model):
    """The bug this module fixed: a rate resolved before the data was read (5e-4) differed
    from the one `train` chose from it (2e-3). The plan is the one place both come from."""
    cfg = build_config({"data": "x.csv", "model": tiny_model, "method": "lora"}, "flags")
    small, large = resolve(cfg, splits_of(300)).settings, resolve(cfg, splits_of(200_000)).settings
    assert small.lr == 2e-3 and large.lr == 5e-4 and large.epochs == 3.0


def test_a_max_length_the_model_cannot_read_is_refused(tiny_model):
    cfg = build_config({"data": "x.csv", "model": tiny_model, "max_length": 512}, "flags")
    with pytest.raises(UserError, match="--max-length 512: .* reads at most 64 tokens"):
        resolve(cfg, splits_of(30))


def test_text_in_another_script_gets_the_multilingual_model_and_says_why():
    cfg = build_config({"data": "x.csv"}, "flags")
    chinese = _Splits(["这部电影真的很好看", "服务态度很差，不推荐"] * 20, None)
    plan = resolve(cfg, chinese)
    assert plan.settings.model == "e5-small" and plan.notes["model"].startswith("model: e5-small")
