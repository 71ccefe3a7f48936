"""Every bad-input case: one line naming the problem, exit code 2, no run folder left behind."""

import pytest

from conftest import make_rows, write_csv
from tunesmith.cli import main


def _expect_error(args, capsys, *fragments) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = [l for l in captured.err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


CASES = {
    "missing file": (lambda d: d / "nope.csv", None, ("nope.csv", "file not found")),
    "bad encoding": (lambda d: d / "enc.csv", b"text,label\ncaf\xe9,a\nok,b\n", ("line 2", "--encoding")),
    "empty file": (lambda d: d / "empty.csv", b"", ("empty.csv", "empty")),
    "nan label": (lambda d: d / "nan.csv", b"text,label\na,x\nb,\nc,y\n", ("row 2", "label is empty")),
    "single class": (lambda d: d / "one.csv", b"text,label\na,x\nb,x\nc,x\n", ("single class",)),
    "no label column": (lambda d: d / "cols.csv", b"body,stars\na,1\nb,2\n", ("--label-col",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data(case, tmp_path, capsys, tiny_model):
    make_path, content, fragments = CASES[case]
    path = make_path(tmp_path)
    if content is not None:
        path.write_bytes(content)
    runs = tmp_path / "runs"
    _expect_error(["train", "--data", str(path), "--model", tiny_model, "--output", str(runs)], capsys, *fragments)
    assert not runs.exists()
    _expect_error(["check", str(path), "--model", tiny_model], capsys, *fragments)


def test_wrong_column_flag(tmp_path, capsys, toy_csv, tiny_model):
    _expect_error(["train", "--data", toy_csv, "--text-col", "body", "--model", tiny_model,
                   "--output", str(tmp_path / "r")], capsys, "no column 'body'", "columns are: text, label")
    assert not (tmp_path / "r").exists()


def test_unknown_model(tmp_path, capsys, toy_csv):
    _expect_error(["train", "--data", toy_csv, "--model", "no-such-model-xyz", "--output", str(tmp_path / "r")],
                  capsys, "--model no-such-model-xyz", "unknown model")
    assert not (tmp_path / "r").exists()


def test_unknown_config_key(tmp_path, capsys, toy_csv):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {toy_csv}\nlearning_rate: 0.1\n")
    _expect_error(["train", str(cfg), "--output", str(tmp_path / "r")], capsys, "c.yaml", "unknown config key 'learning_rate'")
    assert not (tmp_path / "r").exists()


def test_existing_run_name_is_refused(tmp_path, capsys, toy_csv, tiny_model):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    _expect_error(["train", "--data", toy_csv, "--model", tiny_model, "--output", str(tmp_path / "runs"),
                   "--name", "taken"], capsys, "already exists", "--resume")


def test_fp16_on_cpu_is_a_clear_error(tmp_path, capsys, toy_csv, tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    _expect_error(["train", "--data", toy_csv, "--model", tiny_model, "--output", str(tmp_path / "runs"),
                   "--precision", "fp16", "--no-baseline"], capsys, "fp16 needs a CUDA GPU")


def test_eval_and_predict_on_missing_run(tmp_path, capsys):
    _expect_error(["eval", str(tmp_path / "nothing")], capsys, "no such run folder")
    _expect_error(["predict", str(tmp_path / "nothing"), "x.csv", "-o", "y.csv"], capsys, "no such run folder")


def test_check_passes_on_good_data_with_exit_0(tmp_path, capsys, tiny_model):
    path = write_csv(tmp_path / "d.csv", make_rows(30))
    assert main(["check", path, "--model", tiny_model, "--lists", str(tmp_path / "lists")]) == 0
    out = capsys.readouterr().out
    assert "rows: train" in out and "token lengths" in out and "0 errors" in out


def test_model_folder_without_config(tmp_path, capsys, toy_csv):
    (tmp_path / "not-a-model").mkdir()
    _expect_error(["train", "--data", toy_csv, "--model", str(tmp_path / "not-a-model"),
                   "--output", str(tmp_path / "r")], capsys, "not-a-model", "no config.json")
    assert not (tmp_path / "r").exists()


def test_ctrl_c_names_the_resume_command(tmp_path, capsys, toy_csv, tiny_model, monkeypatch):
    import tunesmith.commands.train as train_module

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "fit", interrupt)
    code = main(["train", "--data", toy_csv, "--model", tiny_model, "--output", str(tmp_path / "runs"),
                 "--name", "x", "--no-baseline"])
    assert code == 130
    assert f"tunesmith train --resume {tmp_path / 'runs' / 'x'}" in capsys.readouterr().err


def test_data_as_the_positional_argument(tmp_path, capsys, toy_csv, tiny_model):
    # `train data.csv` names the data (as `compare DATA` does) instead of failing as bad YAML.
    runs = tmp_path / "runs"
    assert main(["train", toy_csv, "--model", tiny_model, "--method", "freeze", "--max-steps", "1",
                 "--no-baseline", "--output", str(runs), "--name", "r"]) == 0
    assert (runs / "r" / "metrics.json").is_file()
    capsys.readouterr()
    _expect_error(["train", toy_csv, "--data", toy_csv, "--model", tiny_model, "--output", str(tmp_path / "x")],
                  capsys, "looks like data", "--data")
    assert not (tmp_path / "x").exists()
