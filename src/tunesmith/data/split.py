"""Train / validation / test splits that keep the test set honest.

One file: exact duplicate texts are removed first, so no text can land in two splits, then
each class is split with the same fractions (stratified) under a fixed seed. Separate
files are used as given (and `check` reports texts they share).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tunesmith.data.labeled import Examples
from tunesmith.errors import UserError


def dedupe(examples: Examples, key=None) -> tuple[Examples, int]:
    """Keep the first occurrence of each exact text (or of each `key(text)`: a conversation's
    canonical JSON, an image file's content hash); return the rest removed, and how many."""
    seen: set = set()
    keep = []
    for i, text in enumerate(examples.texts):
        identity = text if key is None else key(text)
        if identity not in seen:
            seen.add(identity)
            keep.append(i)
    return examples.subset(keep), len(examples) - len(keep)


def stratified_indices(labels: list[str], fractions: list[float], seed: int) -> list[list[int]]:
    """Split positions into len(fractions)+1 groups; group k gets fractions[k] of every class.

    The last group takes the remainder. Classes too small to give every group one example
    keep their examples in the last group (the training split, by convention of callers).
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    groups: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label in sorted(by_label):
        members = np.array(by_label[label])
        rng.shuffle(members)
        start = 0
        for k, fraction in enumerate(fractions):
            take = int(round(len(members) * fraction))
            if len(members) - start - take < 1:  # always leave at least one for the remainder
                take = max(0, len(members) - start - 1)
            groups[k].extend(members[start : start + take].tolist())
            start += take
        groups[-1].extend(members[start:].tolist())
    return [sorted(g) for g in groups]


def sample(examples: Examples, limit: int | None, seed: int, strata=lambda labels: labels) -> Examples:
    """A stratified sample of at most `limit` examples (all of them when under the limit)."""
    if limit is None or len(examples) <= limit:
        return examples
    chosen, _rest = stratified_indices(strata(examples.labels), [limit / len(examples)], seed)
    return examples.subset(chosen)


def sample_splits(splits: list[Examples], cfg, unit: str, notes: list[str], strata=lambda labels: labels) -> list[Examples]:
    """Train, validation and test sampled to --max-train-samples / --max-eval-samples (a note
    says so when that cut any), each refused when empty; `unit` names what a row is."""
    limits = (cfg.max_train_samples, cfg.max_eval_samples, cfg.max_eval_samples)
    sampled = [sample(split, limit, cfg.seed, strata) for split, limit in zip(splits, limits)]
    if [len(s) for s in sampled] != [len(s) for s in splits]:
        notes.append(f"sampled train {len(sampled[0])}/val {len(sampled[1])}/test {len(sampled[2])} {unit} "
                     "(max_train_samples, max_eval_samples)")
    for name, split in zip(("train", "validation", "test"), sampled):
        if len(split) == 0:
            raise UserError(f"{cfg.data}: the {name} split has no {unit}; add data or give --val-data / --test-data")
    return sampled
