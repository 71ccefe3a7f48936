"""Ranking evaluation for pair runs used as recommenders or retrievers (`tunesmith eval --rank`).

Rows are (query, candidate, relevance): a user profile or a question beside an item text, with a
click, a rating or a match label. Rows are grouped by their query; within each query the
candidates are ordered by a score, best first, and compared with their relevance:

- NDCG@k: the discounted gain of the top k (gain 2^rel - 1, discount log2(rank + 1)) over the
  best possible order's; graded relevance counts (a 5-star rating above a 3).
- MRR: 1 / the rank of the first relevant candidate (relevance above 0), 0 if none is ranked.
- recall@k: the share of a query's relevant candidates that are in its top k.

Each is the mean over queries that have at least one relevant candidate (a query without one
says nothing about the order). Ties are broken by the rows' order in the file, the same for
every scorer. Three scorers are compared on the same rows: the run's model; popularity (how
relevant each candidate was on average across the run's training queries; unseen candidates
score 0); and the untuned similarity (cosine of the pretrained model's mean-pooled embeddings
of query and candidate, before any fine-tuning).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

KS = (1, 5, 10)
POSITIVE_NAMES = ("1", "true", "yes", "positive", "match", "relevant", "clicked", "entailment")


def positive_label(labels: list[str], given: str | None = None) -> str:
    """The label of a pair classifier that means a good match."""
    from tunesmith.errors import UserError

    positive = given or next((label for label in labels if label.lower() in POSITIVE_NAMES), None)
    if positive not in labels:
        raise UserError(f"--positive-label: which of {', '.join(labels)} means a good match? pass --positive-label NAME")
    return positive


def relevance(targets: list, positive: str | None) -> np.ndarray:
    """Each row's relevance: a regression's numbers as they are (`positive` None), else 1 for
    the positive label of a pair classifier and 0 for the others."""
    if positive is None:
        return np.asarray(targets, dtype=float)
    return np.array([1.0 if t == positive else 0.0 for t in targets])


def groups(queries: list[str]) -> dict[str, list[int]]:
    by_query: dict[str, list[int]] = defaultdict(list)
    for i, query in enumerate(queries):
        by_query[query].append(i)
    return by_query


def ranking_metrics(queries: list[str], relevance, scores, ks=KS) -> dict:
    relevance, scores = np.asarray(relevance, dtype=float), np.asarray(scores, dtype=float)
    totals: dict[str, float] = defaultdict(float)
    counted = 0
    for members in groups(queries).values():
        gains = relevance[members]
        if not (gains > 0).any():
            continue
        counted += 1
        order = sorted(range(len(members)), key=lambda j: (-scores[members[j]], j))  # stable: file order on ties
        ranked = gains[order]
        first = next(r for r, g in enumerate(ranked, start=1) if g > 0)
        totals["mrr"] += 1.0 / first
        ideal = np.sort(gains)[::-1]
        for k in ks:
            totals[f"ndcg@{k}"] += _dcg(ranked[:k]) / _dcg(ideal[:k])
            totals[f"recall@{k}"] += float((ranked[:k] > 0).sum() / (gains > 0).sum())
    return {"queries": counted, **{name: (value / counted if counted else 0.0) for name, value in sorted(totals.items())}}


def _dcg(gains: np.ndarray) -> float:
    return float(sum((2.0 ** g - 1) / math.log2(rank + 2) for rank, g in enumerate(gains)))


def popularity_scores(train_candidates: list[str], train_relevance, candidates: list[str]) -> np.ndarray:
    """Each candidate's mean relevance over the training rows it appears in (0 if it never does)."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for candidate, rel in zip(train_candidates, np.asarray(train_relevance, dtype=float)):
        sums[candidate] += rel
        counts[candidate] += 1
    return np.array([sums[c] / counts[c] if counts[c] else 0.0 for c in candidates])


def similarity_scores(encoder, tokenizer, queries: list[str], candidates: list[str], max_length: int) -> np.ndarray:
    """Cosine of the untuned model's mean-pooled embeddings of each query and its candidate."""
    from tunesmith.evaluate.features import embed_with
    from tunesmith.evaluate.features import normalise

    unique_q, unique_c = sorted(set(queries)), sorted(set(candidates))
    eq = normalise(embed_with(encoder, tokenizer, unique_q, max_length))
    ec = normalise(embed_with(encoder, tokenizer, unique_c, max_length))
    qi, ci = {q: i for i, q in enumerate(unique_q)}, {c: i for i, c in enumerate(unique_c)}
    return np.array([float(eq[qi[q]] @ ec[ci[c]]) for q, c in zip(queries, candidates)])


def table(results: dict[str, dict], ks=KS) -> str:
    """A Markdown table: one row per scorer."""
    columns = ["mrr", *(f"ndcg@{k}" for k in ks), *(f"recall@{k}" for k in ks)]
    lines = ["| scorer | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, metrics in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics.get(c, 0.0):.4f}" for c in columns) + " |")
    return "\n".join(lines)
