"""--task rl: GRPO's maths against TRL's and a hand computation, the rewards, and runs end to end
on a tiny Llama (train, resume, reload, generate, serve)."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.tasks import grpo, rewards

COLOURS = ["sky", "grass", "snow", "sun", "blood", "coal"]


def test_advantages_are_trls_group_normalised_rewards():
    from trl.trainer.utils import nanstd

    reward = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.2, 0.9, 0.3])
    grouped = reward.view(-1, 4)
    theirs = (grouped - grouped.mean(1, keepdim=True)) / (torch.stack([nanstd(g) for g in grouped]).unsqueeze(1) + 1e-4)
    assert torch.allclose(grpo.group_advantages(reward, 4), theirs.view(-1), atol=1e-6)
    assert torch.all(grpo.group_advantages(reward, 4)[4:8] == 0)  # a group of equal rewards teaches nothing


def test_the_loss_is_the_clipped_objective_with_a_k3_kl_averaged_per_completion():
    torch.manual_seed(0)
    logps = torch.randn(3, 5, requires_grad=True)
    old = logps.detach() + 0.3 * torch.randn(3, 5)  # a stale policy: some ratios leave [0.8, 1.2]
    ref = logps.detach() + 0.1 * torch.randn(3, 5)
    advantages = torch.tensor([1.0, -0.5, 2.0])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    loss, kl = grpo.policy_loss(logps, old, ref, advantages, mask, 0.2, 0.04)
    expected, kls = 0.0, 0.0
    for i in range(3):  # the DeepSeekMath formula, token by token
        total, total_kl, n = 0.0, 0.0, int(mask[i].sum())
        for t in range(n):
            ratio = float(torch.exp(logps[i, t] - old[i, t]))
            a = float(advantages[i])
            d = float(ref[i, t] - logps[i, t])
            k3 = float(torch.exp(torch.tensor(d))) - d - 1
            total += -min(ratio * a, min(max(ratio, 0.8), 1.2) * a) + 0.04 * k3
            total_kl += k3
        expected += total / n / 3
        kls += total_kl / n / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5) and kl == pytest.approx(kls, rel=1e-5)
    # On policy (one step per group, old = current): the gradient is the policy gradient's.
    logps.grad = None
    on_policy, _ = grpo.policy_loss(logps, logps.detach(), None, advantages, mask, 0.2, 0.0)
    on_policy.backward()
    assert torch.allclose(logps.grad[0, :3], torch.full((3,), -1.0 / 3 / 3))
    assert torch.all(logps.grad[0, 3:] == 0)


def test_built_in_rewards():
    assert rewards.number(None, ["3 + 4 = 7, so\nAnswer: 7", "Answer: 1,200", "it is 8", "no idea"],
                          ["7", "1200", "7", "7"]) == [1.0, 1.0, 0.0, 0.0]
    fmt = rewards.pattern_match(rewards.FORMAT)
    assert fmt(None, ["so 7\nAnswer: 7", "Answer: seven"], None) == [1.0, 0.0]
    assert rewards.valid_json(None, ['{"a": 1}', "```json\n[1, 2]\n```", "{a: 1}"], None) == [1.0, 1.0, 0.0]
    assert rewards.parse("number, format=0.2,my.py:score=-1") == [("number", 1.0), ("format", 0.2), ("my.py:score", -1.0)]
    for bad in ("number,,format", "format=x", "number=nan"):
        with pytest.raises(UserError, match="--reward"):
            rewards.parse(bad)


def test_a_users_reward_function_is_checked(tmp_path):
    module = tmp_path / "mine.py"
    module.write_text("def score(prompts, completions, answers):\n    return [len(c) for c in completions]\n"
                      "def short(prompts, completions, answers):\n    return [1.0]\n")
    combined = rewards.build(f"number,{module}:score=0.5", None, None, 8)
    values = rewards.score_all(combined, ["p", "p"], ["Answer: 2", "x"], ["2", "2"])
    assert values["reward"] == [1.0 + 0.5 * 9, 0.5 * 1]
    with pytest.raises(UserError, match="returned 1 rewards for 2 completions"):
        rewards.build(f"{module}:short", None, None, 8)[0].score(["p", "p"], ["a", "b"], ["", ""])
    with pytest.raises(UserError, match="has no function nothing"):
        rewards.build(f"{module}:nothing", None, None, 8)
    with pytest.raises(UserError, match="not a reward"):
        rewards.build("numbers", None, None, 8)


def test_arithmetic_problems_are_seeded_and_the_splits_disjoint():
    from tunesmith.data import arithmetic

    first, second = arithmetic.splits(), arithmetic.splits()
    assert first["test"].frame.equals(second["test"].frame)
    questions = {split: set(t.frame["prompt"]) for split, t in first.items()}
    assert not questions["train"] & questions["test"] and not questions["val"] & questions["test"]
    for row in first["train"].frame.to_dict("records")[:50]:  # the answer is what the story says
        assert rewards.final_number(row["answer"]) >= 0


def _prompts(path, n=48):
    """`n` distinct prompts in the tiny tokenizer's words."""
    openings = ["what is", "tell me", "please tell me", "what is it", "me please", "a short answer", "answer me", "tell"]
    lines = [f"{openings[i // len(COLOURS) % len(openings)]} the colour of {COLOURS[i % len(COLOURS)]}" for i in range(n)]
    path.write_text("prompt\n" + "".join(line + "\n" for line in lines))
    return path


def _e_reward(folder):
    """A user's reward function, dense enough for a tiny random model: the letters e it writes."""
    module = folder / "e_reward.py"
    module.write_text("def score(prompts, completions, answers):\n    return [c.count('e') / 4 for c in completions]\n")
    return f"{module}:score"


@pytest.fixture(scope="module")
def rl_run(tiny_causal_lm, tmp_path_factory):
    """GRPO on a tiny random Llama rewarded by a user's function for the letters e it writes."""
    base = tmp_path_factory.mktemp("rl")
    data = _prompts(base / "prompts.csv")
    args = ["train", str(data), "--task", "rl", "--reward", _e_reward(base), "--model",
            tiny_causal_lm, "--method", "full", "--lr", "3e-2", "--epochs", "4", "--max-new-tokens", "6",
            "--group-size", "4", "--max-length", "48", "--output", str(base / "runs"), "--name", "rl"]
    assert main(args) == 0
    return base / "runs" / "rl", args


def test_grpo_raises_the_reward_and_logs_completions(rl_run):
    run, _ = rl_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["reward"] > metrics["baseline"]["reward"] + 0.2
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    steps = [h for h in history if "loss" in h]
    assert all({"reward", "reward_std", "kl", "completion_tokens", "sample"} <= set(h) for h in steps)
    assert isinstance(steps[0]["sample"]["completion"], str)
    assert steps[-1]["reward"] > steps[0]["reward"]
    report = (run / "report.html").read_text()
    assert "Rewards (training)" in report and "Sampled completions" in report


def test_grpo_resumes_reloads_generates_and_serves(rl_run, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run
    from tunesmith.serve.app import create_app
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    run, _ = rl_run
    before = json.loads((run / "metrics.json").read_text())["test"]
    assert main(["eval", str(run)]) == 0  # reloads and scores with the saved rewards
    assert json.loads((run / "metrics.json").read_text())["test"]["reward"] == pytest.approx(before["reward"])
    assert main(["generate", str(run), "what is the colour of sky"]) == 0
    key = "k" * 24
    app = create_app(Predictor.from_run(Run(run)), ServeSettings(run=str(run)), KeyRing([key]), run_info(Run(run)))
    with TestClient(app) as client:
        answer = client.post("/v1/predict", json={"inputs": ["what is the colour of snow"]},
                             headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200 and isinstance(answer.json()[0]["generated"], str)


def test_an_interrupted_grpo_run_resumes_to_the_same_result(tiny_causal_lm, tmp_path, monkeypatch):
    """The sampling generator's state is in the checkpoint: the resumed run samples what the
    straight one sampled."""
    from conftest import interrupt_during_second_evaluation
    from tunesmith.tasks import TASKS

    data = _prompts(tmp_path / "prompts.csv", 24)

    def args(name):
        return ["train", str(data), "--task", "rl", "--reward", _e_reward(tmp_path), "--model",
                tiny_causal_lm, "--method", "full", "--lr", "3e-2", "--epochs", "2", "--max-new-tokens", "4",
                "--max-length", "48", "--eval-every", "2", "--output", str(tmp_path), "--name", name]

    assert main(args("straight")) == 0
    interrupt_during_second_evaluation(monkeypatch, TASKS["rl"], args("cut"))
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert resumed["test"]["reward"] == pytest.approx(straight["test"]["reward"])
    assert resumed["val_best"] == pytest.approx(straight["val_best"])


def test_number_rewards_need_answers(tmp_path, tiny_causal_lm, capsys):
    data = _prompts(tmp_path / "prompts.csv", 12)
    code = main(["train", str(data), "--task", "rl", "--model", tiny_causal_lm, "--output", str(tmp_path / "runs")])
    assert code == 2 and "train rows have no number in their answer column" in capsys.readouterr().err
