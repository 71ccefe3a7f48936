"""Batches of similar-length texts with dynamic padding, so little compute goes to padding.

Training: each epoch shuffles all examples, cuts them into mega-batches of 50 batches,
sorts each mega-batch by length and cuts it into batches, then shuffles the batch order.
Batches are still random, but a batch of short tweets is no longer padded to the length of
the one long tweet among them. The order is a pure function of (seed, epoch), which is
what lets a resumed run replay exactly the batches an uninterrupted run would see.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


IGNORE = -100  # label of positions the loss skips (padding, special tokens, non-first sub-words)


@dataclass
class Features:
    """Model inputs of a list of examples, ready to batch; what the training loop consumes.

    Each row holds `input_ids` and, for pairs, `token_type_ids`; with targets, `labels`:
    an int (class), a float (regression), a list of floats (multi-hot) or, when
    `token_labels` is set, one int per token (padded with IGNORE). `meta` keeps what a
    task needs to map outputs back to its examples (word positions, sentence index).
    """

    rows: list[dict]
    pad_id: int
    token_labels: bool = False
    meta: list[dict] = field(default_factory=list)
    collate: object = None  # rows -> batch, for inputs that are not token ids (images), or packed rows
    processor: object = None  # what encoded the rows, for tasks that decode outputs (generation)
    pool: str | None = None  # rows of several windows (--long-text chunk): "mean" or "max" of their logits

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> list[int]:
        # "length": rows of several sequences (a DPO pair) give their longest.
        return [row["length"] if "length" in row else len(row["input_ids"]) if "input_ids" in row else 1
                for row in self.rows]

    def batch(self, indices) -> dict[str, torch.Tensor]:
        if self.collate is not None:
            return self.collate([self.rows[i] for i in indices])
        return collate_rows([self.rows[i] for i in indices], self.pad_id, self.token_labels)


def collate_rows(rows: list[dict], pad_id: int, token_labels: bool = False) -> dict[str, torch.Tensor]:
    width = max(len(row["input_ids"]) for row in rows)
    pad = {"input_ids": pad_id, "token_type_ids": 0, "labels": IGNORE}
    batch = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if key in ("input_ids", "token_type_ids") or (key == "labels" and token_labels):
            tensor = torch.full((len(rows), width), pad[key], dtype=torch.long)
            for i, seq in enumerate(values):
                tensor[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            batch[key] = tensor
        elif isinstance(values[0], int):
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:  # floats: regression targets, multi-hot vectors
            batch[key] = torch.tensor(values, dtype=torch.float32)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        mask[i, : len(row["input_ids"])] = 1
    batch["attention_mask"] = mask
    return batch
