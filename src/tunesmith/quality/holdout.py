"""An honest validation split for `tunesmith auto`: validation rows that nearly repeat a
training text train instead, so a target judged on validation is judged on rows unlike the
training data.

Why: a validation split carved out of the training file inherits that file's near-duplicates.
SST-2's training file holds the treebank's phrases, parts of the same sentences: 44% of a
validation split drawn from it nearly repeats a training phrase (cosine >= 0.95), and that
split scored 3-4 points above the official dev set of whole sentences, so `auto` stopped a rung
early, on a target the model did not meet on new text (docs/benchmarks.md, "`tunesmith auto` on
SST-2"). Moving the rows to train loses no data (the model learns from them), and the test split
is left exactly as it was: it is the user's to judge with (`--dedupe near` drops its near-copies
too, when asked).
"""

from __future__ import annotations

from dataclasses import replace

from tunesmith.data.labeled import Examples
from tunesmith.quality import neighbours
from tunesmith.quality.features import embed_with, load_encoder


def near_copy_rows(train: Examples, val: Examples, source: str, tokenizer, max_length: int,
                   threshold: float) -> list[int]:
    """Rows of `val` whose nearest training text has cosine >= `threshold` (the backbone's
    mean-pooled features, the same ones `check` compares)."""
    encoder = load_encoder(source)
    x_train = embed_with(encoder, tokenizer, train.texts, max_length)
    x_val = embed_with(encoder, tokenizer, val.texts, max_length)
    return sorted(q for q, _, _ in neighbours.near_duplicates(x_train, x_val, threshold))


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
