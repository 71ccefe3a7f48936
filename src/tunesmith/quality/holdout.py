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

Moving alone leaves few rows on phrase data: 6,564 of SST-2's 6,698 carved rows repeat a
training text, so 135 stayed, and on 135 rows one sentence is 0.74 points. Most repeats are
phrases inside a training sentence and must go, but some are whole sentences whose only fault
is that their own longer phrases train (a shared span; near-copies by embedding, if any, are
those phrases). Those stay, and the training rows they share a span with leave training
instead (`make_honest`): on SST-2 614 sentences stay for 2,457 phrases (3.7% of the training
rows), 752 honest validation rows in all. What may leave training is capped at
MAX_DROPPED_SHARE of it; past the cap, rows move as before.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from tunesmith.data.labeled import Examples
from tunesmith.quality import neighbours, overlap
from tunesmith.quality.features import embed_with, load_encoder


# At most this share of the training rows leaves training so that validation rows can stay.
# Losing 5% of the rows costs a model little; SST-2 needs 3.7% to keep 5.6 times the honest rows.
MAX_DROPPED_SHARE = 0.05


@dataclass(frozen=True)
class Honest:
    """What `make_honest` did: validation rows moved to train, validation rows kept by dropping
    the training rows they share a span with, and how many training rows were dropped."""
    moved: int = 0
    mended: int = 0
    dropped: int = 0


def repeating_rows(train: Examples, parts: list[Examples], source: str, tokenizer, max_length: int,
                   threshold: float) -> list[dict[int, str]]:
    """For each of `parts`, {row: why} for its rows that repeat a training text: "inside" or
    "shared span" where they overlap one word for word (overlap.py), and "near" where a training
    text has cosine >= `threshold` (the backbone's mean-pooled features, the same ones `check`
    compares). A row that shares a span with training stays "shared span" when every such near
    training text is one it shares a span with: a sentence nearly repeats the long phrases cut
    from it, and dropping those (`make_honest`) leaves it repeating nothing."""
    encoder = load_encoder(source)
    x_train = embed_with(encoder, tokenizer, train.texts, max_length)
    index = overlap.TrainingIndex(train.texts)
    found = []
    for part in parts:
        x = embed_with(encoder, tokenizer, part.texts, max_length)
        why = {q: kind for q, _, kind in overlap.overlapping_rows(index, part.texts)}
        near = [q for q, _, _ in neighbours.near_duplicates(x_train, x, threshold)]
        sharing = [q for q in near if why.get(q) == "shared span"]
        close = dict(zip(sharing, neighbours.within(x_train, x[sharing], threshold))) if sharing else {}
        why.update({q: "near" for q in near
                    if q not in close or not own_phrases(part.texts[q], [train.texts[r] for r in close[q]], index.span)})
        found.append(dict(sorted(why.items())))
    return found


def own_phrases(text: str, near_texts: list, span: int) -> bool:
    """Whether every one of `near_texts` (training texts nearly repeating `text`) shares a run of
    `span` words with it."""
    own = overlap.TrainingIndex([text], span=span)
    return all(_shares_a_span(own, near) for near in near_texts)


def make_honest(splits, repeats: dict[int, str], test_share: float, seed: int):
    """`splits` with validation repeating training text at the test file's `test_share`, and an
    `Honest` saying how: rows that only share a span with training stay where dropping those
    training rows fits MAX_DROPPED_SHARE (`rows_to_mend`), enough of the others move to train
    (`rows_to_move`), and last the training rows that share a span with a validation row that
    should repeat nothing leave training (rows just moved included: a phrase of a kept sentence)."""
    if not repeats or len(repeats) / len(splits.val) <= test_share:
        return splits, Honest()
    span = _span(splits.train.texts)
    cap = int(MAX_DROPPED_SHARE * len(splits.train))
    mended = rows_to_mend(splits.train.texts, splits.val.texts,
                          [r for r, why in repeats.items() if why == "shared span"], span, cap, seed)
    rest = sorted(set(repeats) - set(mended))
    moving = rows_to_move(rest, len(splits.val), test_share, seed)
    not_clean = set(rest)  # those moving, and the test file's share of repeats, left as they are
    clean = [text for r, text in enumerate(splits.val.texts) if r not in not_clean]
    splits = move_to_train(splits, moving)
    leaking = pieces_of(clean, splits.train.texts, span, first_moved=len(splits.train) - len(moving))
    kept = [i for i in range(len(splits.train)) if i not in leaking]
    return replace(splits, train=splits.train.subset(kept)), Honest(len(moving), len(mended), len(leaking))


def pieces_of(val_texts: list, train_texts: list, span: int, first_moved: int) -> set[int]:
    """The training rows that share a span with one of `val_texts`, and of the rows from
    `first_moved` on (validation rows just moved to train, none of which was checked against the
    rest of validation) those that also hold one whole: a phrase moved to train that contains a
    short sentence kept in validation."""
    by_span = overlap.TrainingIndex(val_texts, span=span)
    rows = {i for i, text in enumerate(train_texts) if _shares_a_span(by_span, text)}
    moved = overlap.TrainingIndex(train_texts[first_moved:], span=span)
    for text in val_texts:
        if isinstance(text, str):
            rows |= {first_moved + r for r in moved.containing(overlap.words(text))}
    return rows


def rows_to_mend(train_texts: list, val_texts: list, candidates: list[int], span: int, cap: int,
                 seed: int) -> list[int]:
    """Of the `candidates` (validation rows that share a span with training text and are not
    inside one), those to keep by dropping the training rows they share a span with, taken in a
    random order (so validation keeps long and short sentences alike) while the training rows to
    drop stay within `cap`. A training row shared by two candidates counts for both."""
    if not candidates or cap <= 0:
        return []
    index = overlap.TrainingIndex([val_texts[r] for r in candidates], span=span)
    pieces = [0] * len(candidates)
    for text in train_texts:
        for i in _shares_a_span(index, text):
            pieces[i] += 1
    order = list(range(len(candidates)))
    random.Random(seed).shuffle(order)
    chosen, used = [], 0
    for i in order:
        if used + pieces[i] <= cap:
            chosen.append(candidates[i])
            used += pieces[i]
    return sorted(chosen)


def _shares_a_span(index: overlap.TrainingIndex, text) -> list[int]:
    return index.sharing_a_span(overlap.words(text)) if isinstance(text, str) and index.spans_indexed else []


def _span(train_texts: list) -> int:
    """The span length overlap.py uses for this training text (longer for Chinese)."""
    return overlap.span_for([overlap.words(t) if isinstance(t, str) else [] for t in train_texts])[0]


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
