"""Log-probabilities of the answer tokens of a causal LM, without its full logits.

A causal LM's head turns every position into scores over the whole vocabulary: for SmolLM2
that is 49,152 float32 numbers per token, 100 MB for one row of 512 tokens, and the softmax
and its gradient hold two or three more copies. Batches of 32 such rows were what filled a
24 GB machine. Only the positions whose next token is trained on (the answer, not the prompt
or the padding) need scores, and even those need not exist all at once: here the body runs
once, the labelled positions are picked out, and the head and the log-softmax run over them
in chunks whose logits are recomputed in the backward pass instead of kept (Liger-Kernel's
and Unsloth's "chunked cross-entropy", in plain PyTorch). Peak memory for the loss is one
chunk's logits, whatever the batch.

The result is exactly the model's own loss (same numbers to float rounding); models whose
head does more than a linear map (logit soft-capping, a logit scale) and DDP-wrapped models,
whose gradient hooks need their own forward, take the plain path through `model(...)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunesmith.data.batching import IGNORE

CHUNK = 1024  # positions per head chunk: 1024 x 49k vocabulary x 4 bytes = 200 MB of logits


def answer_logprobs(model, input_ids, labels, attention_mask=None, chunk: int = CHUNK, smoothing: float = 0.0,
                    **inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed log-probability of its labelled tokens (label at t is predicted
    from position t-1, as transformers shifts them), and how many there are. `inputs`: any
    other model inputs of the batch (position_ids of packed rows). `smoothing`: label
    smoothing's epsilon (then each token's term is the smoothed cross-entropy's, negated)."""
    per_token, mask = token_logprobs(model, input_ids, labels, attention_mask, chunk, smoothing, **inputs)
    return per_token.sum(1), mask.sum(1)


def token_logprobs(model, input_ids, labels, attention_mask=None, chunk: int = CHUNK, smoothing: float = 0.0,
                   **inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probability of each labelled token, (rows, length - 1) with 0 elsewhere, and
    the mask of labelled positions (GRPO weighs tokens one by one)."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **inputs}
    targets = labels[:, 1:]
    mask = targets != IGNORE
    parts = _body_and_head(model)
    if parts is None:  # the plain path: full logits, as the model computes them
        logits = model(**inputs).logits[:, :-1]
        token_logps = -F.cross_entropy(logits.float().transpose(1, 2), targets.clamp(min=0), reduction="none",
                                       label_smoothing=smoothing)
        return token_logps * mask, mask
    body, head = parts
    hidden = body(**inputs).last_hidden_state[:, :-1]
    picked, picked_targets = hidden[mask], targets[mask]
    pieces = []
    for start in range(0, len(picked), chunk):
        args = (picked[start : start + chunk], picked_targets[start : start + chunk], head.weight, head.bias, smoothing)
        if torch.is_grad_enabled():  # recompute the chunk's logits in backward instead of keeping them
            pieces.append(checkpoint(_chunk_logps, *args, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(*args))
    picked_logps = torch.cat(pieces) if pieces else hidden.new_zeros(0)
    per_token = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device).masked_scatter(mask, picked_logps)
    return per_token, mask


def mean_answer_loss(model, batch: dict, smoothing: float = 0.0) -> torch.Tensor:
    """The causal-LM training loss (mean negative log-likelihood over labelled tokens), the
    same number `model(**batch).loss` gives, at a fraction of the memory."""
    sums, counts = answer_logprobs(model, **batch, smoothing=smoothing)
    return -sums.sum() / counts.sum().clamp(min=1)


def _chunk_logps(hidden, targets, weight, bias, smoothing: float = 0.0):
    logits = F.linear(hidden, weight, bias).float()
    return -F.cross_entropy(logits, targets, reduction="none", label_smoothing=smoothing)


def _body_and_head(model):
    """(the transformer without its head, the head) when the head is a plain linear map."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return None
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper
    config = getattr(lm, "config", None)
    if config is None or getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    body = getattr(lm, "base_model", None)
    if not isinstance(head, torch.nn.Linear) or body is None or body is lm:
        return None
    return body, head
