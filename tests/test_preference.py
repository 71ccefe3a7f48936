"""The preference-loss family: each loss against TRL's own code on the same tensors, and runs
with a reference loss and a reference-free one on a tiny Llama."""

from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from conftest import COLOURS, make_qa_rows
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.tasks.preference_losses import PairScores, pair_losses

trl = pytest.importorskip("trl", reason="TRL is in the dev extra: the losses are checked against its code")

PAIRS, WIDTH = 4, 9


def _accelerator():
    same = lambda tensor: tensor  # noqa: E731  (one process: gathering is the identity)
    return SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=same, gather=same)


def _batch(seed: int = 0):
    """Per-token log-probabilities of 4 chosen then 4 rejected answers after a prompt, and the
    reference's sums: TRL's inputs, and ours (sums and token counts) made from the same tensors."""
    generator = torch.Generator().manual_seed(seed)
    completion = torch.zeros(2 * PAIRS, WIDTH, dtype=torch.long)
    for row in range(2 * PAIRS):
        completion[row, 2: 3 + row % 5] = 1  # the prompt's two tokens first, then 1..5 answer tokens
    per_token = -torch.rand(2 * PAIRS, WIDTH - 1, generator=generator) * 3 * completion[:, 1:]
    reference = -torch.rand(2 * PAIRS, generator=generator) * 6
    sums, counts = per_token.sum(1), completion.sum(1).float()
    ours = PairScores(sums[:PAIRS], sums[PAIRS:], counts[:PAIRS], counts[PAIRS:], reference[:PAIRS], reference[PAIRS:])
    return per_token, completion, reference, ours


def _trl_dpo_loss(loss_type: str, beta: float, noise: float, seed: int = 0) -> float:
    """TRL's DPOTrainer._compute_loss run on given log-probabilities (a stand-in model returns
    them; the reference's come precomputed, as ours do)."""
    from trl import DPOTrainer

    per_token, completion, reference, _ = _batch(seed)
    outputs = SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token),
                              mean_logits=torch.zeros_like(per_token), is_top1=torch.zeros_like(per_token).bool())
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_accelerator(), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0],
        beta=beta, label_smoothing=noise, use_weighting=False, _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros_like(completion), "attention_mask": torch.ones_like(completion),
              "completion_mask": completion, "ref_chosen_logps": reference[:PAIRS],
              "ref_rejected_logps": reference[PAIRS:]}
    return float(DPOTrainer._compute_loss(trainer, lambda **_: outputs, inputs, False))


@pytest.mark.parametrize("loss_type,beta,noise", [("sigmoid", 0.1, 0.0), ("hinge", 0.3, 0.0), ("ipo", 0.1, 0.0),
                                                  ("robust", 0.1, 0.2)])
def test_the_losses_with_a_reference_are_trls(loss_type, beta, noise):
    ours = pair_losses(loss_type, _batch()[3], beta, noise)[0].mean()
    assert float(ours) == pytest.approx(_trl_dpo_loss(loss_type, beta, noise), rel=1e-5)


def test_simpo_is_trls_cpo_loss_on_average_log_probabilities():
    from trl.experimental.cpo import CPOTrainer

    scores = _batch()[3]
    chosen, rejected = scores.average()
    trainer = SimpleNamespace(alpha=0.0, loss_type="simpo", beta=2.0, simpo_gamma=0.5, label_smoothing=0.0,
                              accelerator=_accelerator())
    theirs, their_chosen, _ = CPOTrainer.cpo_loss(trainer, chosen, rejected)
    ours, our_chosen, _ = pair_losses("simpo", scores, beta=2.0, gamma=0.5)
    assert torch.allclose(ours, theirs) and torch.allclose(our_chosen, their_chosen)


def test_orpo_is_trls_odds_ratio_term():
    from trl.experimental.orpo import ORPOTrainer

    scores = _batch()[3]
    chosen, rejected = scores.average()
    trainer = SimpleNamespace(beta=0.1, accelerator=_accelerator())
    theirs = ORPOTrainer.odds_ratio_loss(trainer, chosen, rejected)[0]
    # TRL's loss is nll - mean(theirs): our per-pair term is their term negated.
    assert torch.allclose(pair_losses("orpo", scores, beta=0.1)[0], -theirs)


def _rows(n: int, seed: int = 0) -> list[dict]:
    """The chosen answer names the right colour, the rejected one the next colour: the same
    length, so the untuned model prefers either about half the time."""
    colours = list(COLOURS.values())
    return [{"prompt": f"{row['instruction']} {row['input']}".strip(), "chosen": row["output"],
             "rejected": row["output"].replace(c, colours[(colours.index(c) + 1) % len(colours)])}
            for row in make_qa_rows(n, seed) for c in [row["output"].split()[-1]]]


@pytest.mark.parametrize("loss", ["ipo", "simpo", "orpo"])
def test_each_loss_trains_a_preference_run_and_reloads(loss, tmp_path, tiny_causal_lm, capsys):
    data = tmp_path / "pref.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(60)))
    beta = {"ipo": "0.1", "simpo": "2.0", "orpo": "0.1"}[loss]
    assert main(["train", str(data), "--task", "preference", "--loss", loss, "--dpo-beta", beta, "--model",
                 tiny_causal_lm, "--method", "full", "--epochs", "3", "--lr", "1e-2", "--eval-answers", "0",
                 "--max-length", "64", "--output", str(tmp_path / "runs"), "--name", "p"]) == 0
    run = tmp_path / "runs" / "p"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["logp_accuracy"] > metrics["baseline"]["logp_accuracy"]
    assert metrics["test"]["loss"] < metrics["baseline"]["loss"]
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert "reward_accuracy" in history[0] and (loss != "orpo" or "nll" in history[0])
    assert ("scored every pair with the reference" in capsys.readouterr().out) == (loss == "ipo")
    assert main(["eval", str(run)]) == 0  # reloads; the reference-free losses load no reference
    again = json.loads((run / "metrics.json").read_text())["test"]
    assert again["loss"] == pytest.approx(metrics["test"]["loss"], abs=1e-4)


def test_robust_needs_its_noise_below_a_half(tmp_path, tiny_causal_lm, capsys):
    data = tmp_path / "pref.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(20)))
    code = main(["train", str(data), "--task", "preference", "--loss", "robust", "--preference-noise", "0.5",
                 "--model", tiny_causal_lm, "--output", str(tmp_path / "runs")])
    assert code == 2 and "preference_noise" in capsys.readouterr().err


# ---- KTO ------------------------------------------------------------------------------------------

def _trl_kto_loss(labels, per_token, completion, reference, kl_logps, ref_kl, beta, weights) -> float:
    from trl import KTOTrainer

    outputs = SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token),
                              mean_logits=torch.zeros_like(per_token))
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_accelerator(), aux_loss_enabled=False,
        precompute_ref_logps=True, calculate_KL=True, loss_type="kto", beta=beta, desirable_weight=weights[0],
        undesirable_weight=weights[1], _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0,
        _tp_size=1, _compute_kl_logps=lambda model, batch: kl_logps)
    inputs = {"input_ids": torch.zeros_like(completion), "attention_mask": torch.ones_like(completion),
              "completion_mask": completion, "label": labels, "ref_logps": reference, "ref_KL_logps": ref_kl}
    return float(KTOTrainer._compute_loss(trainer, lambda **_: outputs, inputs, False))


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.5, 0.7)])
def test_kto_is_trls(weights):
    from tunesmith.tasks import kto

    per_token, completion, reference, scores = _batch()
    labels = torch.tensor([True, False, True, True, False, False, True, False])
    generator = torch.Generator().manual_seed(1)
    kl_logps, ref_kl = -torch.rand(8, generator=generator) * 5, -torch.rand(8, generator=generator) * 5
    answer = per_token.sum(1)
    ours = kto.losses(answer, reference, kl_logps, ref_kl, labels, 0.1, *weights)[0].mean()
    theirs = _trl_kto_loss(labels, per_token, completion, reference, kl_logps, ref_kl, 0.1, weights)
    assert float(ours) == pytest.approx(theirs, rel=1e-5)


def test_feedback_rows_are_read_in_trls_and_llamafactorys_layouts(tmp_path):
    from tunesmith.tasks.preference import read_pairs

    trl_rows = tmp_path / "feedback.jsonl"
    trl_rows.write_text(json.dumps({"prompt": "colour of sky?", "completion": "blue", "label": True}) + "\n" +
                        json.dumps({"prompt": "colour of sky?", "completion": "red", "label": "false"}) + "\n")
    rows = read_pairs(str(trl_rows), "utf-8")["all"].texts
    assert [(r["completion"], r["label"]) for r in rows] == [("blue", True), ("red", False)]
    assert rows[0]["prompt"] == [{"role": "user", "content": "colour of sky?"}]
    demo = read_pairs("kto-en-demo", "utf-8")["all"]
    assert len(demo) == 300 and {r["label"] for r in demo.texts} == {True, False}
    pairs = read_pairs("dpo-en-demo", "utf-8")["all"]  # ShareGPT conversations + chosen/rejected messages
    assert len(pairs) == 300 and pairs.texts[0]["prompt"][-1]["role"] == "user" and pairs.texts[0]["chosen"]


def _feedback_rows(n: int) -> list[dict]:
    """Answers that name the colour marked good, answers that dodge the question marked bad."""
    good = [{"prompt": r["prompt"], "completion": r["chosen"], "label": True} for r in _rows(n)]
    bad = [{"prompt": r["prompt"], "completion": "please tell me a short answer", "label": False}
           for r in _rows(n, seed=1)]
    return [row for pair in zip(good, bad) for row in pair]


def test_kto_trains_on_thumbs_up_and_down_and_reloads(tmp_path, tiny_causal_lm, capsys):
    data = tmp_path / "feedback.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _feedback_rows(40)))
    assert main(["train", str(data), "--task", "preference", "--loss", "kto", "--model", tiny_causal_lm, "--method",
                 "full", "--epochs", "3", "--lr", "1e-2", "--eval-answers", "0", "--max-length", "64",
                 "--output", str(tmp_path / "runs"), "--name", "k"]) == 0
    run = tmp_path / "runs" / "k"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["baseline"]["reward_margin"] == 0.0 and metrics["test"]["reward_margin"] > 0
    assert metrics["test"]["loss"] < metrics["baseline"]["loss"]
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert "kl" in history[0] and "reward_accuracy" in history[0]
    assert main(["eval", str(run)]) == 0  # reloads, the reference scored again from the base model
    again = json.loads((run / "metrics.json").read_text())["test"]
    assert again["reward_margin"] == pytest.approx(metrics["test"]["reward_margin"], abs=1e-4)
    code = main(["train", str(data), "--task", "preference", "--model", tiny_causal_lm, "--output",
                 str(tmp_path / "runs")])
    assert code == 2 and "train them with --loss kto" in capsys.readouterr().err


def test_check_suggests_weights_for_unbalanced_feedback(tmp_path, tiny_causal_lm, capsys):
    rows = _feedback_rows(30)
    rows = [r for r in rows if r["label"]] + [r for r in rows if not r["label"]][:6]  # 30 good, 6 bad
    data = tmp_path / "feedback.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["check", str(data), "--task", "preference", "--loss", "kto", "--model", tiny_causal_lm, "--json"])
    report = json.loads(capsys.readouterr().out)
    good, bad = report["facts"]["answers"]["desirable"], report["facts"]["answers"]["undesirable"]
    assert good > 3 * bad  # the training split keeps the imbalance
    assert any(f"--desirable-weight {bad / good:.2f} --undesirable-weight 1" in w for w in report["warnings"])


# ---- reward models --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reward_run(tiny_causal_lm, tmp_path_factory):
    """A reward model on a tiny Llama (a causal LM body: its classifier reads the last token)
    that learns to rank the right colour above the wrong one."""
    base = tmp_path_factory.mktemp("rm")
    data = base / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(60)))
    assert main(["train", str(data), "--task", "reward-model", "--model", tiny_causal_lm, "--epochs", "6", "--lr", "3e-3",
                 "--max-length", "32", "--output", str(base / "runs"), "--name", "rm"]) == 0
    from tunesmith.runs import Run

    return Run(base / "runs" / "rm")


def test_a_reward_model_ranks_held_out_pairs_better_than_untuned(reward_run):
    metrics = json.loads(reward_run.metrics_file.read_text())
    assert metrics["test"]["pair_accuracy"] > metrics["baseline"]["pair_accuracy"]
    assert metrics["test"]["pair_accuracy"] >= 0.8 and metrics["test"]["margin"] > 0
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(reward_run.model_dir)
    assert model.config.num_labels == 1


def test_the_reward_loss_is_trls(reward_run):
    """TRL's RewardTrainer.compute_loss on the same model and batch (margins included)."""
    from trl import RewardTrainer

    from tunesmith.inference import Predictor

    predictor = Predictor.from_run(reward_run)
    pairs = [dict(r, margin=m) for r, m in zip(_rows(4, seed=3), (0.0, 0.5, 1.0, 0.2))]
    batch = predictor.task.encode(predictor.tokenizer, pairs, None, [], 32).batch(list(range(len(pairs))))
    model = predictor.model.eval()
    trainer = SimpleNamespace(model=model, args=SimpleNamespace(center_rewards_coefficient=None),
                              accelerator=_accelerator(), _metrics=defaultdict(lambda: defaultdict(list)),
                              _total_train_tokens=0, _tp_size=1)

    def forward(margin=None, use_cache=None, **inputs):  # TRL hands the margin to the model call too
        return model(**inputs)

    with torch.no_grad():
        ours, _ = predictor.task.training_loss(model, batch)
        theirs = RewardTrainer.compute_loss(trainer, forward, dict(batch))
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_a_reward_model_scores_files_and_serves_v1_score(reward_run, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunesmith.inference import Predictor
    from tunesmith.serve.app import create_app
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    rows = tmp_path / "answers.csv"
    rows.write_text("prompt,answer\nwhat is the colour of sky,it is blue\nwhat is the colour of sky,it is green\n")
    out = tmp_path / "scored.csv"
    assert main(["predict", str(reward_run.path), str(rows), "-o", str(out)]) == 0
    scored = [line.split(",")[-1] for line in out.read_text().splitlines()[1:]]
    assert len(scored) == 2
    key = "k" * 24
    app = create_app(Predictor.from_run(reward_run), ServeSettings(run=str(reward_run.path)), KeyRing([key]),
                     run_info(reward_run))
    with TestClient(app) as client:
        answer = client.post("/v1/score", json={"prompt": "what is the colour of sky",
                                                "answers": ["it is green", "it is blue"]},
                             headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["scores"][1] == pytest.approx(float(scored[0]), abs=1e-4) and body["best"] == 1


def test_a_reward_model_refuses_answers_marked_good_or_bad(tmp_path, tiny_model, capsys):
    data = tmp_path / "feedback.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _feedback_rows(10)))
    code = main(["train", str(data), "--task", "reward-model", "--model", tiny_model, "--output", str(tmp_path / "r")])
    assert code == 2 and "a reward model trains on prompt, chosen and rejected" in capsys.readouterr().err


def test_a_reward_model_run_is_a_reward_for_grpo(reward_run, tmp_path):
    """`--reward RUN`: the run's own scores of (prompt, completion), as `predict` gives them."""
    from tunesmith.inference import Predictor
    from tunesmith.tasks import rewards

    prompts = [[{"role": "user", "content": "what is the colour of sky"}]] * 2
    completions = ["it is blue", "it is green"]
    reward = rewards.build(str(reward_run.path), None, None, 8)[0]
    expected = Predictor.from_run(reward_run).predict([("what is the colour of sky", c) for c in completions])
    assert reward.score(prompts, completions, ["", ""]) == pytest.approx([float(x) for x in expected], abs=1e-5)
    with pytest.raises(UserError, match="not a finished tunesmith run"):
        rewards.build(str(tmp_path), None, None, 8)


def test_a_pair_whose_answers_are_cut_away_does_not_stop_training(tmp_path, tiny_causal_lm):
    """A prompt longer than max_length leaves a pair no answer tokens: its loss is a constant
    (no gradient), and training goes on with the other pairs."""
    rows = _rows(12)
    rows[0] = dict(rows[0], prompt="what is the colour of sky " * 40)  # fills --max-length 48 by itself
    data = tmp_path / "pref.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["train", str(data), "--task", "preference", "--model", tiny_causal_lm, "--method", "full",
                 "--batch-size", "1", "--grad-accum", "2", "--epochs", "1", "--eval-answers", "0", "--max-length", "48",
                 "--val-fraction", "0.1", "--test-fraction", "0.1", "--seed", "1",
                 "--output", str(tmp_path / "runs"), "--name", "cut"]) == 0
