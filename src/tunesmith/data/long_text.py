"""Texts longer than the model reads: `--long-text truncate | head-tail | chunk`.

- truncate: the first `max_length` tokens (what every tokenizer does).
- head-tail: the first quarter of the budget and the last three quarters. Sun et al. 2019
  ("How to fine-tune BERT for text classification") found head 128 + tail 382 the best of
  their cuts for 512-token IMDb reviews: a review's verdict is often at its end.
- chunk: overlapping windows of `max_length` tokens (a quarter of each overlaps the one
  before, so no sentence is only ever seen cut in two), at most `max_windows` per text (the
  first ones: the cost of a text is bounded). The model scores every window and the
  windows' logits are pooled into one row per text: their mean, or their max for
  multi-label (a label present in any window is present in the text). Pooling happens
  inside the forward, so training's loss, validation, `eval`, `predict` and `serve` all see
  the pooled row.

Rows of chunked features hold `windows` (token id lists) and `length` (their tokens, for
length-sorted batching); `input_ids` keeps the first window, which is the truncated text
(the untuned baseline reads that).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from tunesmith.data.batching import Features, collate_rows
from tunesmith.data.tokens import cached_ids

MODES = ("truncate", "head-tail", "chunk")
HEAD_SHARE = 0.25  # head-tail: a quarter of the budget from the start, the rest from the end
OVERLAP = 0.25  # chunk: share of a window repeated from the previous one


@dataclass(frozen=True)
class LongText:
    """How a run reads texts longer than max_length (recorded in its config.yaml)."""

    mode: str = "truncate"
    max_windows: int = 8

    @classmethod
    def of(cls, cfg) -> "LongText":
        """From a TrainConfig (a run's, read by `Run.settings()`)."""
        return cls(cfg.long_text, cfg.max_windows)


TRUNCATE = LongText()


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a text ([CLS] and [SEP] for BERT)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []  # a tokenizer that changes the text's own ids: add nothing


def head_tail(ids: list[int], budget: int) -> list[int]:
    if len(ids) <= budget:
        return ids
    head = int(budget * HEAD_SHARE)
    return ids[:head] + ids[len(ids) - (budget - head) :]


def windows(ids: list[int], budget: int, max_windows: int) -> list[list[int]]:
    stride = max(1, budget - int(budget * OVERLAP))
    out = [ids[:budget]]
    start = stride
    while start + budget - stride < len(ids) and len(out) < max_windows:  # something new is left
        out.append(ids[start : start + budget])
        start += stride
    return out


def encode_long(tokenizer, texts: list[str], max_length: int, long_text: LongText, pad_id: int,
                pool: str, use_cache: bool = True) -> Features:
    """Features of single texts read by head-tail or chunk; `pool`: "mean" or "max"."""
    before, after = special_tokens(tokenizer)
    budget = max(1, max_length - len(before) - len(after))
    ids = cached_ids(tokenizer, texts, use_cache)  # whole texts, no special tokens
    if long_text.mode == "head-tail":
        return Features([{"input_ids": before + head_tail(x, budget) + after} for x in ids], pad_id)
    rows = []
    for x in ids:
        parts = [before + w + after for w in windows(x, budget, long_text.max_windows)]
        rows.append({"input_ids": parts[0], "windows": parts, "length": sum(len(p) for p in parts)})
    return Features(rows, pad_id, collate=partial(collate_windows, pad_id=pad_id), pool=pool)


def collate_windows(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Every window of every row as one padded batch, `window_row` saying whose each is, and
    the rows' own labels (one per text, not per window)."""
    flat = [{"input_ids": w} for row in rows for w in row["windows"]]
    batch = collate_rows(flat, pad_id)
    batch["window_row"] = torch.tensor([i for i, row in enumerate(rows) for _ in row["windows"]], dtype=torch.long)
    if "labels" in rows[0]:
        batch["labels"] = collate_rows([{"input_ids": [0], "labels": row["labels"]} for row in rows], pad_id)["labels"]
    return batch


def pool_rows(logits: torch.Tensor, window_row: torch.Tensor, pool: str) -> torch.Tensor:
    """One row of logits per text from its windows' rows: their mean or their max."""
    rows = int(window_row.max()) + 1
    index = window_row[:, None].expand_as(logits)
    if pool == "max":
        out = logits.new_full((rows, logits.shape[1]), float("-inf"))
        return out.scatter_reduce(0, index, logits, reduce="amax")
    out = logits.new_zeros((rows, logits.shape[1]))
    return out.scatter_reduce(0, index, logits, reduce="mean", include_self=False)


def sequence_logits(model, batch: dict, pool: str | None = None) -> torch.Tensor:
    """The model's logits, one row per example, for a batch without labels: windows pooled
    when the batch has them."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "window_row")}
    logits = model(**inputs).logits
    if "window_row" in batch:
        return pool_rows(logits, batch["window_row"], pool or "mean")
    return logits


def pooled_loss(problem_type: str, pool: str):
    """`compute_loss(model, batch)` for chunked rows: the loss Transformers would compute for
    the head's problem type, on the pooled logits."""
    import torch.nn.functional as F

    def compute_loss(model, batch):
        logits, labels = sequence_logits(model, batch, pool), batch["labels"]
        if problem_type == "regression":
            loss = F.mse_loss(logits.squeeze(-1), labels.float()) if logits.shape[-1] == 1 else F.mse_loss(logits, labels)
        elif problem_type == "multi_label_classification":
            loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        else:
            loss = F.cross_entropy(logits, labels)
        return loss, {}

    return compute_loss
