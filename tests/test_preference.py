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
