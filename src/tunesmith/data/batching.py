"""Batches of similar-length texts with dynamic padding, so little compute goes to padding.

Training: each epoch shuffles all examples, cuts them into mega-batches of 50 batches,
sorts each mega-batch by length and cuts it into batches, then shuffles the batch order.
Batches are still random, but a batch of short tweets is no longer padded to the length of
the one long tweet among them. The order is a pure function of (seed, epoch), which is
what lets a resumed run replay exactly the batches an uninterrupted run would see.
"""

from __future__ import annotations

import numpy as np
import torch

MEGA_BATCH = 50  # batches per sorting window: larger = less padding, less randomness


def train_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    lengths_arr = np.asarray(lengths)
    window = batch_size * MEGA_BATCH
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(-lengths_arr[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def inference_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Longest first, so memory peaks on the first batch (fail fast) and padding is minimal."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def collate(token_ids: list[list[int]], pad_id: int, labels: list[int] | None = None) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids in token_ids)
    input_ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if labels is not None:
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
    return batch
