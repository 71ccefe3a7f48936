"""Reranking: a cross-encoder scores how well a passage answers a query, reading both at once.

A bi-encoder (tasks/sentence_embedding.py) embeds query and passage apart, so a search over
a whole collection is one nearest-neighbour lookup; a cross-encoder reads the two as one
input: slower, more precise, the usual second stage over a retriever's top candidates. It
trains on the same data (query, positive[, hard negative]).

Each query becomes a list of CANDIDATES passages: its positives, its hard negatives, and
passages of other queries of the same split drawn with a fixed seed. Training is listwise: one
softmax over the list, whose probability mass should sit on the positives (the listwise loss
of sentence-transformers' CrossEncoder and of MS MARCO rerankers). Evaluation reranks each
held-out query's list: MRR@10, NDCG@10 and recall@1, beside the untuned model's mean-pooled
embeddings ranking the same lists (what a search has without a reranker). The model is
transformers' sequence classifier with one output: `sentence_transformers.CrossEncoder(folder)`
loads it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tunesmith.data.batching import Features, collate_rows
from tunesmith.data.checks import CheckReport
from tunesmith.errors import UserError
from tunesmith.tasks import TaskDefaults, register_task
from tunesmith.tasks.sentence_embedding import RETRIEVAL, SentenceEmbedding, retrieval_metrics, scored

CANDIDATES = 10  # passages each query ranks, in training and evaluation
DRAW_SEED = 0  # the draw of other queries' passages as negatives: the same lists in every run


@dataclass
class Lists:
    """Each query's candidate scores and which candidates answer it."""

    scores: list[np.ndarray]
    relevant: list[set[int]]


@dataclass
class ListFeatures(Features):
    """One row per query: its (query, candidate) pairs' token ids in `pairs`, `types`; `relevant`
    holds, per query, the positions of its positives. For the baseline, which embeds texts
    apart: `distinct`, the token ids of each distinct text, and `lists`, each query and its
    candidates as positions in `distinct`."""

    relevant: list[set[int]] = field(default_factory=list)
    distinct: list[list[int]] = field(default_factory=list)
    lists: list[tuple[int, list[int]]] = field(default_factory=list)


class Reranker(TaskDefaults):
    name = "reranker"
    pipeline_tag = "text-ranking"
    peft_task_type = "SEQ_CLS"
    default_model = "minilm"
    exportable = True  # a (query, passage) pair's token ids in, one logit out
    quantisable = True
    rerank = True
    answer = "regression"  # /v1/predict: {"score": ...} per (query, passage) pair
    input_kind = "text_pair"
    metrics_higher_is_better = {name: True for name in RETRIEVAL}
    default_metric = "ndcg_at_10"
    has_baseline = True
    baseline_name = "the untuned model's embeddings ranking the same candidates"
    methods = SentenceEmbedding.methods  # a loss of its own, as for embeddings: methods that tune the body
    train_defaults = {"method": "full", "batch_size": 8}  # 8 queries = 80 (query, passage) pairs a step
    quality_checks = ()
    ensemble = ()
    mean_pooling = False  # transformers' own one-output head, which CrossEncoder loads
    sequences_per_example = CANDIDATES
    pairs_task = SentenceEmbedding()  # reads, splits and checks the query-positive pairs

    # ---- data ---------------------------------------------------------------------------
    def load_data(self, cfg):
        splits = self.pairs_task.load_data(cfg)
        if scored(splits.train):
            raise UserError(f"{cfg.data}: has a score column; a reranker trains on query and positive pairs "
                            "(anchor, positive[, negative]); scored pairs train --task sentence-embedding")
        return splits

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8"):
        return self.pairs_task.read_labeled(source, cfg, labels, text_col, label_col, encoding)

    def check(self, splits, tokenizer, max_length: int) -> CheckReport:
        return self.pairs_task.check(splits, tokenizer, max_length)

    # ---- model --------------------------------------------------------------------------
    def build_model(self, source: str, labels: list[str], pooling: str = "cls"):
        from transformers import AutoModelForSequenceClassification

        from tunesmith.models import with_new_head

        return with_new_head(AutoModelForSequenceClassification, source, ["relevance"])

    def load_model(self, folder: str):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)  # never unpickled

    def load_processor(self, source: str, cfg=None):
        from tunesmith import models

        return models.load_tokenizer(source)

    # ---- features, loss, prediction, metrics ---------------------------------------------
    def encode(self, tokenizer, inputs, targets, labels, max_length, use_cache=True, augment=False,
               long_text=None) -> Features:
        """(query, passage) pairs as they are (predict, serve); query-positive pairs become
        each query's list of candidates."""
        from tunesmith.data.tokens import tokenize, tokenize_pairs

        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if not inputs or not isinstance(inputs[0], dict):
            ids, types = tokenize_pairs(tokenizer, [tuple(x) for x in inputs], max_length, use_cache=use_cache)
            rows = [{"input_ids": i} for i in ids]
            for row, t in zip(rows, types or []):
                row["token_type_ids"] = t
            return Features(rows, pad_id)
        queries, candidates, relevant = candidate_lists(inputs)
        flat = [(q, c) for q, cs in zip(queries, candidates) for c in cs]
        ids, types = tokenize_pairs(tokenizer, flat, max_length, use_cache=use_cache)
        distinct = sorted({t for pair in flat for t in pair})
        position = {text: i for i, text in enumerate(distinct)}
        features = ListFeatures([], pad_id, collate=lambda rows: _collate(rows, pad_id),
                                distinct=tokenize(tokenizer, distinct, max_length, use_cache=use_cache))
        at = 0
        for query, cs, answers in zip(queries, candidates, relevant):
            span = range(at, at + len(cs))
            at += len(cs)
            features.rows.append({"pairs": [ids[i] for i in span],
                                  **({"types": [types[i] for i in span]} if types else {}),
                                  "positive": [k in answers for k in range(len(cs))],
                                  "length": max(len(ids[i]) for i in span)})
            features.relevant.append(answers)
            features.lists.append((position[query], [position[c] for c in cs]))
        return features

    def training_loss(self, model, batch, processor=None):
        """Listwise: -log of the softmax mass on each query's positives (mean over queries)."""
        logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}).logits
        scores = logits[:, 0].masked_fill(~batch["real"], -1e4).view(-1, CANDIDATES)
        positive_mass = torch.logsumexp(scores.masked_fill(~batch["positive"], -1e4), dim=1)
        return (torch.logsumexp(scores, dim=1) - positive_mass).mean(), {}

    def predict(self, model, features: Features, batch_size: int = 32):
        """Scores of (query, passage) pairs, or each query's candidate scores (`Lists`)."""
        from tunesmith.forward import predict_logits

        if not isinstance(features, ListFeatures):
            return predict_logits(model, features, batch_size)[:, 0]
        flat = [{"input_ids": ids, **({"token_type_ids": row["types"][k]} if "types" in row else {})}
                for row in features.rows for k, ids in enumerate(row["pairs"])]
        scores = predict_logits(model, Features(flat, features.pad_id), batch_size)[:, 0]
        bounds = np.cumsum([0] + [len(row["pairs"]) for row in features.rows])
        return Lists([scores[a:b] for a, b in zip(bounds[:-1], bounds[1:])], features.relevant)

    def metrics(self, targets, outputs, labels) -> dict:
        return retrieval_metrics(_padded(outputs.scores), outputs.relevant)

    def summary(self, metrics: dict) -> str:
        return (f"NDCG@10 {metrics['ndcg_at_10']:.4f}, MRR@10 {metrics['mrr_at_10']:.4f}, recall@1 "
                f"{metrics['recall_at_1']:.4f} ({metrics['count']} queries, {CANDIDATES} candidates each)")

    def tune_on_validation(self, model, features, targets, labels) -> dict:
        return {}

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        from tunesmith.evaluate.baseline import embed

        vectors = embed(getattr(model, model.base_model_prefix), test.distinct, test.pad_id)  # each text once
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        scores = [vectors[candidates] @ vectors[query] for query, candidates in test.lists]
        return self.metrics(test_targets, Lists(scores, test.relevant), labels)

    # ---- `predict` on a file, serving -----------------------------------------------------
    def read_inputs(self, path: str, encoding: str, text_col: str | None, text_pair_col: str | None = None):
        from tunesmith.data.sources import read_source
        from tunesmith.tasks.sentence_embedding import POSITIVE_COLUMNS, QUERY_COLUMNS

        table = read_source(path, encoding).get("all")
        if table is None:
            raise UserError(f"{path}: give a CSV, TSV or JSONL file of query and passage columns")
        columns = {str(c).lower(): c for c in table.frame.columns}
        query = text_col or next((columns[n] for n in QUERY_COLUMNS if n in columns), None)
        passage = text_pair_col or next((columns[n] for n in POSITIVE_COLUMNS if n in columns), None)
        if query not in table.frame.columns or passage not in table.frame.columns:
            raise UserError(f"{path}: cannot tell the query and the passage columns; columns are: "
                            f"{', '.join(map(str, table.frame.columns))}; name them query and passage")
        rows = table.frame.to_dict("records")
        return rows, [(str(r[query]), str(r[passage])) for r in rows]

    def write_predictions(self, path, rows, outputs, labels) -> None:
        from tunesmith.forward import write_rows

        write_rows(path, [{**row, "score": round(float(s), 6)} for row, s in zip(rows, outputs)])

    def serve_input(self, value, pairs: bool):
        if not isinstance(value, dict) or not {"text", "text_pair"} <= set(value):
            raise ValueError('a reranker scores a query and a passage: give {"text": query, "text_pair": passage}')
        return (value["text"], value["text_pair"])

    def sample_input(self, text: str, pairs: bool) -> dict:
        return {"text": text, "text_pair": text[::-1]}

    def output_rows(self, outputs) -> list:
        return list(outputs)

    def serve_output(self, value, row, labels: list[str], top_k: int | None) -> dict:
        return {"score": float(row)}

    def card_usage(self) -> list[str]:
        return ["```python", "from sentence_transformers import CrossEncoder", "",
                'model = CrossEncoder("path/to/model")',
                'ranked = model.rank("a query", ["a passage", "another passage"])', "```", "",
                "Its scores are the raw logits tunesmith gives (CrossEncoder may put a sigmoid on them: "
                "the order is the same)."]


def candidate_lists(pairs: list[dict]) -> tuple[list[str], list[list[str]], list[set[int]]]:
    """Per distinct query: its candidates (positives, then hard negatives, then other queries'
    passages drawn with DRAW_SEED, CANDIDATES in all when the split has that many) and the
    positions of its positives."""
    positives: dict[str, list[str]] = {}
    negatives: dict[str, list[str]] = {}
    for pair in pairs:
        positives.setdefault(pair["anchor"], []).append(pair["positive"])
        if "negative" in pair:
            negatives.setdefault(pair["anchor"], []).append(pair["negative"])
    passages = sorted({p for ps in positives.values() for p in ps} | {n for ns in negatives.values() for n in ns})
    rng = np.random.default_rng(DRAW_SEED)
    queries, candidates, relevant = [], [], []
    for query, own in positives.items():
        own = list(dict.fromkeys(own))[:CANDIDATES - 1]
        listed = own + [n for n in dict.fromkeys(negatives.get(query, [])) if n not in own]
        others = [p for p in passages if p not in set(listed)]
        extra = max(0, CANDIDATES - len(listed))
        listed = (listed + [others[i] for i in rng.permutation(len(others))[:extra]])[:CANDIDATES]
        queries.append(query)
        candidates.append(listed)
        relevant.append(set(range(len(own))))
    return queries, candidates, relevant


def _collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Each query's candidates, padded to CANDIDATES with empty pairs the loss leaves out."""
    flat, positive, real = [], [], []
    for row in rows:
        for k in range(CANDIDATES):
            have = k < len(row["pairs"])
            pair = {"input_ids": row["pairs"][k if have else 0]}
            if "types" in row:
                pair["token_type_ids"] = row["types"][k if have else 0]
            flat.append(pair)
            positive.append(have and row["positive"][k])
            real.append(have)
    batch = collate_rows(flat, pad_id)
    batch["positive"] = torch.tensor(positive).view(len(rows), CANDIDATES)
    batch["real"] = torch.tensor(real)
    return batch


def _padded(scores: list[np.ndarray]) -> np.ndarray:
    """Lists of candidate scores as one matrix, shorter lists padded with -inf (ranked last)."""
    width = max(len(s) for s in scores)
    out = np.full((len(scores), width), -np.inf)
    for i, s in enumerate(scores):
        out[i, : len(s)] = s
    return out


register_task(Reranker())
