import pytest

from tunesmith.config import TrainConfig, build_config, config_to_yaml_dict, load_config
from tunesmith.errors import UserError
from tunesmith.plan import epochs, learning_rate, settings_with, training_steps


def test_flag_overrides_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: a.csv\nepochs: 5\nmethod: full\n")
    cfg = load_config(path, {"epochs": 2.0, "data": None})
    assert cfg.epochs == 2.0  # the flag wins
    assert cfg.data == "a.csv"  # an unset flag (None) leaves the file's value
    assert cfg.method == "full"


def test_unknown_key_names_key_and_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: a.csv\nlerning_rate: 0.1\n")
    with pytest.raises(UserError, match=r"c.yaml: unknown config key 'lerning_rate'.*"):
        load_config(path, {})


def test_close_typo_gets_suggestion():
    with pytest.raises(UserError, match=r"did you mean 'epochs'"):
        build_config({"epoch": 3}, "flags")
    with pytest.raises(UserError, match=r"unknown config key 'learning_rate' \(did you mean 'lr'\?\)"):
        build_config({"learning_rate": 3e-5}, "flags")


def test_bad_value_names_the_key():
    with pytest.raises(UserError, match=r"'batch_size'"):
        build_config({"batch_size": 0}, "cfg.yaml")
    with pytest.raises(UserError, match=r"unknown method 'lorra'.*full"):
        build_config({"method": "lorra"}, "flags")


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(path, {})


def test_a_config_is_frozen_and_changes_only_into_a_new_one():
    from pydantic import ValidationError

    cfg = TrainConfig(data="x.csv", method="lora")
    with pytest.raises(ValidationError, match="frozen"):
        cfg.lr = 1e-3
    changed = settings_with(cfg, lr=1e-3)
    assert changed.lr == 1e-3 and cfg.lr is None
    with pytest.raises(ValidationError):  # a new config is validated like any other
        settings_with(cfg, lr=-1.0)
    values = config_to_yaml_dict(changed)
    assert values["lr"] == 1e-3 and values["resume"] is None
    assert learning_rate(build_config(values, "config.yaml"), None) == 1e-3


def test_ner_defaults_to_full_at_its_own_lr_and_a_given_lr_or_method_wins():
    """Token classification at the sequence tasks' defaults is undertrained after 3 passes, and
    lora above 5e-4 collapsed on e5-small (docs/benchmarks.md, "NER defaults"): NER trains full at
    2e-4 unless told otherwise; other methods keep their own rate."""
    ner = {"data": "x.conll", "task": "token-classification"}
    cfg = build_config(ner, "flags")
    assert cfg.method == "full" and learning_rate(cfg, None) == 2e-4
    assert learning_rate(build_config({**ner, "method": "lora"}, "flags"), None) == 5e-4  # lora's own
    assert learning_rate(build_config({**ner, "method": "lora", "lr": 1e-4}, "flags"), None) == 1e-4
    assert learning_rate(build_config({"data": "x.csv", "method": "full"}, "flags"), None) == 5e-5  # sequence tasks: unchanged


def test_lora_rate_falls_with_the_run_length_on_classification_only():
    """LoRA at 2e-3 beat 5e-4 on runs of 170-850 steps and lost on 5,652 (docs/benchmarks.md,
    "LoRA's learning rate and the run's length"): classification gets 2e-3 up to 1,000 steps, then
    a rate that halves as the steps double, down to the 5e-4 default. Other tasks and methods keep one rate."""
    lora = build_config({"data": "x.csv", "method": "lora"}, "flags")  # batch 32, 3 passes
    assert training_steps(lora, 9_000) == 3 * 282
    assert learning_rate(lora, 9_000) == 2e-3  # banking77: 846 steps
    assert learning_rate(lora, 20_000) == pytest.approx(2e-3 * 1000 / 1_875)  # 1,875 steps: 1.07e-3
    assert learning_rate(lora, 60_280) == 5e-4  # all of SST-2, 5,652 steps: the floor, measured best there
    assert learning_rate(lora, None) == 5e-4  # without the data: the method's one default
    rates = [learning_rate(lora, rows) for rows in (100, 10_000, 40_000, 80_000, 200_000)]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) > 2  # never rises with more steps
    assert learning_rate(build_config({"data": "x.csv", "method": "lora", "lr": 1e-4}, "flags"), 100) == 1e-4
    assert learning_rate(build_config({"data": "x.csv", "method": "full"}, "flags"), 100) == 5e-5
    for task in ("regression", "token-classification", "causal-lm"):  # not measured there: one rate
        assert learning_rate(build_config({"data": "x.csv", "method": "lora", "task": task}, "flags"), 100) == 5e-4


def test_every_field_has_a_flag_and_help():
    import argparse

    from tunesmith.commands.flags import add_flags

    parser = argparse.ArgumentParser()
    add_flags(parser, TrainConfig)
    args = parser.parse_args(["--lora-targets", "query,value", "--no-baseline", "--epochs", "1.5"])
    assert args.lora_targets == ["query", "value"] and args.baseline is False and args.epochs == 1.5
    for field in TrainConfig.model_fields.values():
        assert field.description, "every setting needs a description: it becomes --help"


def test_a_finished_run_reads_back_as_a_typed_config_and_old_layouts_migrate(tmp_path):
    import yaml

    from tunesmith.config import CONFIG_VERSION
    from tunesmith.runs import Run

    run = Run(tmp_path / "run")
    run.path.mkdir()
    written = config_to_yaml_dict(TrainConfig(data="x.csv", method="lora", long_text="chunk", lr=5e-4,
                                              model="minilm"))
    run.config_file.write_text(yaml.safe_dump(written))
    settings = run.settings()
    assert isinstance(settings, TrainConfig) and settings.long_text == "chunk"
    assert settings.config_version == CONFIG_VERSION == written["config_version"]

    # A run folder from before config_version (and before --long-text) reads as truncation.
    old = {k: v for k, v in written.items() if k not in ("config_version", "long_text", "max_windows")}
    run.config_file.write_text(yaml.safe_dump(old))
    settings = run.settings()
    assert settings.long_text == "truncate" and settings.config_version == CONFIG_VERSION
    assert settings.lr == written["lr"] and settings.model == written["model"]

    run.config_file.write_text(yaml.safe_dump({**written, "config_version": CONFIG_VERSION + 1}))
    with pytest.raises(UserError, match="newer tunesmith"):
        run.settings()


def test_default_epochs_give_small_data_enough_steps():
    """3 passes by default; on small data as many as make 100 optimizer steps, at most 10. A
    number the user gives is kept as it is."""
    from tunesmith.config import build_config

    cfg = build_config({"method": "lora"}, "t")  # batch 32
    assert cfg.epochs is None
    assert epochs(cfg, 9000) == 3.0  # 282 steps a pass
    assert epochs(cfg, 320) == 10.0  # 10 steps a pass: 100 steps need 10
    assert epochs(cfg, 1000) == 4.0  # 32 steps a pass: 4 passes make 128
    assert epochs(cfg, 10) == 10.0  # never more than 10
    assert epochs(build_config({"epochs": 1}, "t"), 320) == 1.0
    accumulated = build_config({"batch_size": 8, "grad_accum": 4}, "t")  # 32 rows a step, as above
    assert epochs(accumulated, 320) == 10.0


def test_a_tracking_uri_is_stored_without_its_secret_and_read_back_from_the_environment(monkeypatch, tmp_path):
    """config.yaml feeds the dashboard, MLflow params, W&B config and TensorBoard hparams: the
    database password of --tracking-uri must not reach any of them."""
    from tunesmith.databases import redacted
    from tunesmith.track.mlflow_log import tracking_uri

    uri = "postgresql://mlflow:hunter2@db.example/mlflow"
    written = config_to_yaml_dict(settings_with(TrainConfig(data="x.csv", lr=1e-3, model="minilm"), tracking_uri=uri))
    assert written["tracking_uri"] == "postgresql://mlflow:***@db.example/mlflow"
    assert redacted("postgresql://:hunter2@db/x?sslpassword=hunter3&password=hunter4") == \
        "postgresql://:***@db/x?sslpassword=***&password=***"
    back = build_config(written, "config.yaml")
    with pytest.raises(UserError, match="set MLFLOW_TRACKING_URI"):
        tracking_uri(back, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking_uri(back, tmp_path) == uri
