"""KTO (Ethayarajh et al. 2024): preference tuning from answers marked good or bad one at a
time, the thumbs up/down a product collects, rather than from ranked pairs.

Each row is a prompt, an answer and a label (desirable or not). With r = log p(answer) -
log p_ref(answer) and z an estimate of the policy's KL from the reference, the loss is, as
TRL's KTOTrainer computes it (tests/test_preference.py runs both),

    desirable:    w_d * (1 - σ(β (r - z)))
    undesirable:  w_u * (1 - σ(β (z - r)))

averaged over the batch's rows. z is the mean of log p - log p_ref over mismatched answers
(each prompt with the next row's answer), clamped at 0 and not differentiated. Here the
mismatched answers are fixed when the split is encoded (TRL's come from the same batch), so
their reference log-probabilities are computed once with the matched ones, before training.

w_d and w_u (`--desirable-weight`, `--undesirable-weight`) balance unequal counts: the paper
keeps w_d n_d / (w_u n_u) between 1 and 4/3; `check` says which weights do.
"""

from __future__ import annotations

import torch

from tunesmith.data import conversations as conv
from tunesmith.data.batching import IGNORE, Features


def encode(processor, rows: list[dict], max_length: int) -> Features:
    """A row per answer: the prompt with its own answer, and with the next row's (for z)."""
    features = []
    for index, row in enumerate(rows):
        mismatched = rows[(index + 1) % len(rows)]["completion"] if len(rows) > 1 else row["completion"]
        answer = _ids(processor, row["prompt"], row["completion"], max_length)
        other = _ids(processor, row["prompt"], mismatched, max_length)
        features.append({"answer": answer, "kl": other, "desirable": bool(row["label"]),
                         "length": max(len(answer[0]), len(other[0]))})
    pad_id = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else \
        processor.tokenizer.eos_token_id
    return Features(features, pad_id, collate=lambda batch: collate(batch, pad_id), processor=processor)


def _ids(processor, prompt: list[dict], completion: str, max_length: int) -> tuple[list[int], list[int]]:
    conversation = [dict(m) for m in prompt] + [{"role": "assistant", "content": completion}]
    piece = conv.encode_conversation(processor.tokenizer, conversation, max_length)[0]
    return piece.input_ids, piece.labels


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """The matched answers, then the mismatched ones, in one right-padded batch of 2 x len(rows)."""
    sequences = [r["answer"] for r in rows] + [r["kl"] for r in rows]
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(sequences):
        input_ids[i, : len(ids)], labels[i, : len(ids)], mask[i, : len(ids)] = torch.tensor(ids), torch.tensor(labs), 1
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": mask,
             "desirable": torch.tensor([r["desirable"] for r in rows])}
    if all("ref_answer" in r for r in rows):
        batch["ref_answer"] = torch.tensor([r["ref_answer"] for r in rows], dtype=torch.float32)
        batch["ref_kl"] = torch.tensor([r["ref_kl"] for r in rows], dtype=torch.float32)
    return batch


def losses(answer, ref_answer, kl_logps, ref_kl, desirable, beta: float, desirable_weight: float = 1.0,
           undesirable_weight: float = 1.0):
    """Per row: the KTO loss and the implicit reward β r; and z."""
    z = (kl_logps - ref_kl).mean().detach().clamp(min=0)
    ratio = answer - ref_answer
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratio - z)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z - ratio)))
    return torch.where(desirable, good, bad), beta * ratio.detach(), z


def metrics(outputs: dict, beta: float, desirable_weight: float, undesirable_weight: float) -> dict:
    t = {k: torch.as_tensor(outputs[k]) for k in ("answer", "ref_answer", "kl", "ref_kl")}
    desirable = torch.as_tensor(outputs["desirable"])
    loss, reward, z = losses(t["answer"], t["ref_answer"], t["kl"], t["ref_kl"], desirable, beta, desirable_weight,
                             undesirable_weight)
    good, bad = reward[desirable], reward[~desirable]
    return {
        "loss": float(loss.mean()),
        # Does tuning raise the good answers above the reference and push the bad ones below it?
        "reward_accuracy": float(((reward > 0) == desirable).float().mean()),
        "reward_margin": float((good.mean() if len(good) else 0.0) - (bad.mean() if len(bad) else 0.0)),
        "kl": float(z),
        "desirable_logp": float(t["answer"][desirable].mean()) if len(good) else 0.0,
        "undesirable_logp": float(t["answer"][~desirable].mean()) if len(bad) else 0.0,
        "count": len(desirable),
    }
