"""Every method at its defaults, long enough for its schedules to act (issue 46): AdaLoRA's rank
allocation (tinit, tfinal), warmup, early stopping, on a 10-class text set and on a second task.
The registry walk's runs are too short for these: AdaLoRA crashed with an internal error only
once its allocator started."""

import json
import random

import pytest

from conftest import write_csv
from tunesmith.cli import main
from tunesmith.methods import METHODS

WORDS = {f"c{k}": [f"cue{k}a", f"cue{k}b", f"cue{k}c"] for k in range(10)}
FILLER = ["the", "a", "service", "please", "my", "card", "account", "help", "today", "why"]


def ten_intents(path, per_class: int = 16) -> str:
    rng = random.Random(0)
    rows = []
    for label, cues in WORDS.items():
        for _ in range(per_class):
            words = rng.sample(FILLER, 3) + rng.sample(cues, 2)
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return write_csv(path, rows)


@pytest.fixture(scope="module")
def intents(tmp_path_factory):
    return ten_intents(tmp_path_factory.mktemp("intents") / "intents.csv")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_40_steps_on_ten_classes_at_its_defaults(method, intents, tiny_sentence_model, tmp_path,
                                                                       capsys):
    """128 training rows at batch 4: 32 steps a pass, and the default passes make at least 100
    steps; --max-steps 48 with an evaluation every 12 steps lets AdaLoRA's allocator (from a
    tenth of the steps to a fifth) and early stopping act. A method this machine cannot run
    (qlora without a GPU) is refused up front in one line."""
    code = main(["train", "--data", intents, "--model", tiny_sentence_model, "--method", method, "--output",
                 str(tmp_path), "--name", "run", "--batch-size", "4", "--max-steps", "48", "--eval-every", "12",
                 "--early-stopping", "2", "--max-length", "16", "--no-baseline", "--no-quality-checks"])
    err = capsys.readouterr().err
    assert "internal error" not in err, err
    if method == "qlora":
        assert code == 2 and err.count("\n") == 1
        return
    assert code == 0, err
    assert (tmp_path / "run" / "metrics.json").is_file()
    if method == "adalora":  # the allocator ran: the ranks it kept are saved with the adapter
        saved = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
        assert saved["rank_pattern"] and saved["tinit"] < saved["tfinal"] < saved["total_step"] == 48


REGRESSION_METHODS = sorted(m for m, method in METHODS.items() if method.tasks is None)


@pytest.mark.parametrize("method", REGRESSION_METHODS)
def test_every_method_for_every_task_trains_40_steps_of_regression(method, tiny_sentence_model, tmp_path, capsys):
    """The same on a second task: a score per text (regression, MSE head)."""
    rng = random.Random(1)
    rows = [{"text": " ".join(rng.sample(FILLER, 3) + [cues[0]]), "label": str(k / 9)}
            for k, cues in enumerate(WORDS.values()) for _ in range(16)]
    data = write_csv(tmp_path / "scores.csv", rows)
    code = main(["train", "--data", data, "--task", "regression", "--model", tiny_sentence_model, "--method", method,
                 "--output", str(tmp_path), "--name", "run", "--batch-size", "4", "--max-steps", "40",
                 "--eval-every", "10", "--max-length", "16", "--no-baseline", "--no-quality-checks"])
    err = capsys.readouterr().err
    assert "internal error" not in err, err
    assert code == (2 if method == "qlora" else 0), err
