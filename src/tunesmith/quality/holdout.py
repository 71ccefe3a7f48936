"""An honest validation split for `tunesmith auto`: a validation split carved out of the
training file should look like the test data, so that a target met on validation is met there.

Why: a carved split inherits the training file's near-duplicates, and a test file need not have
them. SST-2's training file holds the treebank's phrases, parts of the same sentences: 44% of a
validation split drawn from it nearly repeats a training phrase (cosine >= 0.95), none of the
official dev set's whole sentences does, and the carved split scored 3-4 points above dev, so
`auto` stopped a rung early on a target the model did not meet on the test data
(docs/benchmarks.md, "`tunesmith auto` on SST-2"). Nor does the embedding comparison find them all: a phrase and the sentence it was cut from
are far apart as vectors, so rows that repeat part of a training text word for word count too
(overlap.py: 97% of the carved SST-2 rows, 0.6% of dev's). Where the test file has as many
(banking77: 26% of the carved split and 29% of the official test set nearly repeat a training
question, 9% and 10% overlap one: customers ask in the same words), the carved split already
looks like it and is left alone.

So: enough of the validation rows that repeat training text, chosen at random, train instead
that validation has the test split's share of them. Moving rows to train loses no data, and the test split is left
exactly as it was.
"""

from __future__ import annotations

import random
from dataclasses import replace

from tunesmith.data.labeled import Examples
from tunesmith.quality import neighbours, overlap
from tunesmith.quality.features import embed_with, load_encoder


def repeating_rows(train: Examples, parts: list[Examples], source: str, tokenizer, max_length: int,
                   threshold: float) -> list[list[int]]:
    """For each of `parts`, its rows that repeat a training text: their nearest training text
    has cosine >= `threshold` (the backbone's mean-pooled features, the same ones `check`
    compares), or they overlap one word for word (overlap.py)."""
    encoder = load_encoder(source)
    x_train = embed_with(encoder, tokenizer, train.texts, max_length)
    index = overlap.TrainingIndex(train.texts)
    found = []
    for part in parts:
        x = embed_with(encoder, tokenizer, part.texts, max_length)
        near = {q for q, _, _ in neighbours.near_duplicates(x_train, x, threshold)}
        found.append(sorted(near | {q for q, _, _ in overlap.overlapping_rows(index, part.texts)}))
    return found


def rows_to_move(near_val: list[int], val_rows: int, test_share: float, seed: int) -> list[int]:
    """The validation rows that repeat training text to move so that what stays has `test_share`
    of them: m of the k such rows among n, with (k - m) / (n - m) = share; none when validation has no more
    than the test split."""
    k, n = len(near_val), val_rows
    if n == 0 or k / n <= test_share:  # also every share >= 1: k <= n
        return []
    m = round((k - test_share * n) / (1 - test_share))
    return sorted(random.Random(seed).sample(near_val, min(k, m)))


def move_to_train(splits, rows: list[int]):
    """A copy of `splits` with validation `rows` appended to the training split."""
    moving = set(rows)
    moved = splits.val.subset(sorted(moving))
    staying = [i for i in range(len(splits.val)) if i not in moving]
    train = Examples(splits.train.texts + moved.texts, splits.train.labels + moved.labels, splits.train.source,
                     splits.train.where + moved.where if splits.train.where and moved.where else [])
    return replace(splits, train=train, val=splits.val.subset(staying))


def plain_rows(examples: Examples) -> bool:
    """One text and one class name or number per row: what a written split reads back as given
    (pairs, word lists and label sets need columns of their own)."""
    return (all(isinstance(t, str) for t in examples.texts)
            and all(isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool))
                    for v in examples.labels))
