"""The preference losses (`--loss`), each per pair, each as TRL defines it (tests/test_preference.py
computes TRL's on the same tensors).

Every loss reads the same numbers of a pair: the summed log-probability of the chosen and the
rejected answer under the model being tuned, their token counts, and (the losses with a
reference) the same sums under the starting model, computed once before training. With
Δ = (log p(chosen) - log p_ref(chosen)) - (log p(rejected) - log p_ref(rejected)):

- sigmoid (DPO, Rafailov et al. 2023): -log σ(β Δ)
- hinge (SLiC, Zhao et al. 2023): max(0, 1 - β Δ)
- ipo (Azar et al. 2023): (Δ' - 1 / 2β)², Δ' with each log-ratio averaged over its tokens
- robust (Chowdhury et al. 2024): DPO unbiased for labels flipped with probability ε
  (`--preference-noise`)
- simpo (Meng et al. 2024), no reference: -log σ(β (avg log p(chosen) - avg log p(rejected)) - γ)
- orpo (Hong et al. 2024), no reference: the chosen answer's SFT loss - β log σ(log odds ratio),
  with the odds of the per-token average probabilities

The implicit reward each reports (for accuracy and margin) is β times the log-ratio for the
losses with a reference, β times the (average, SimPO) log-probability for the others, as TRL
logs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

REFERENCE_FREE = ("simpo", "orpo")
LOSSES = ("sigmoid", "ipo", "hinge", "robust", "simpo", "orpo")


@dataclass
class PairScores:
    """Per pair: the summed answer log-probabilities and their token counts (and the reference's)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None

    def average(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.chosen / self.chosen_tokens.clamp(min=1), self.rejected / self.rejected_tokens.clamp(min=1)


def pair_losses(kind: str, s: PairScores, beta: float, noise: float = 0.0,
                gamma: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, chosen reward, rejected reward) per pair. ORPO's SFT term is added by the caller
    (it is a mean over the batch's chosen tokens, not over pairs)."""
    if kind in REFERENCE_FREE:
        chosen, rejected = s.average()
        if kind == "simpo":
            losses = -F.logsigmoid(beta * (chosen - rejected) - gamma)
        else:  # orpo: log odds = log p/(1-p), p the per-token average probability
            log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
            losses = -beta * F.logsigmoid(log_odds)
        return losses, beta * chosen.detach(), beta * rejected.detach()
    chosen_ratio, rejected_ratio = s.chosen - s.ref_chosen, s.rejected - s.ref_rejected
    delta = chosen_ratio - rejected_ratio
    if kind == "sigmoid":
        losses = -F.logsigmoid(beta * delta)
    elif kind == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif kind == "ipo":  # per-token log-ratios, as TRL (and the IPO authors' experiments) normalise them
        per_token = chosen_ratio / s.chosen_tokens.clamp(min=1) - rejected_ratio / s.rejected_tokens.clamp(min=1)
        losses = (per_token - 1 / (2 * beta)) ** 2
    elif kind == "robust":
        losses = (-(1 - noise) * F.logsigmoid(beta * delta) + noise * F.logsigmoid(-beta * delta)) / (1 - 2 * noise)
    else:
        raise ValueError(f"unknown preference loss {kind!r}; one of {', '.join(LOSSES)}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Mächler 2012), as TRL computes it."""
    x = x.float()
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
