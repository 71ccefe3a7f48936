"""Sentence embeddings for retrieval: a query and the passage that answers it end up close.

An example is a query with a positive passage, and optionally a hard negative (the
sentence-transformers column names: `anchor`/`positive`/`negative`, and the usual variants),
or two texts and a similarity score (`sentence1`/`sentence2`/`score`).
Pairs train with the multiple-negatives ranking loss (Henderson et al. 2017; sentence-transformers'
MultipleNegativesRankingLoss): in a batch, each query must pick its own positive among every
positive and negative of the batch, and each positive its own query (both directions), by
cosine similarity times a scale of 20. Scored pairs train with CoSENT (Su 2022;
sentence-transformers' CoSENTLoss), a cosine loss on the order of the scores: every two pairs
of a batch whose scores differ are a ranking the cosines must keep, so scores on any scale
(0-5 for STS-B, 0-1, -1 to 1) need no rescaling. No head: the model is the body, pooled as the
backbone was trained (mean for sentence-transformers models, else [CLS]) and normalised.

Evaluation on pairs is retrieval over the held-out split: its queries against every distinct
passage of the split (the corpus), recall@1/@10, MRR@10 and NDCG@10; on scored pairs, the
Spearman (and Pearson) correlation of the cosines with the scores; the untuned model's beside them.
The model folder is a sentence-transformers model (`modules.json`, pooling, normalisation):
`SentenceTransformer(folder)` loads it and gives the same vectors.

Models trained with instructions in front of their texts keep them: E5 models read "query: "
before a query and "passage: " before a passage (Wang et al. 2022), and lose accuracy without
them. The prompts come from the base model's `config_sentence_transformers.json` when it has
some, else from the name for the E5 family; training, evaluation, `predict` and `serve` put them
in front (a text to embed is a query; the assistant embeds its answers as passages), and the
model folder keeps them where sentence-transformers reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tunesmith.data.batching import Features, inference_batches
from tunesmith.data.checks import CheckReport, check_shared_keys
from tunesmith.data.labeled import TEXT_COLUMNS, Examples, pick_column
from tunesmith.data.sources import Table, read_source
from tunesmith.data.split import sample, stratified_indices
from tunesmith.data.splits import Splits
from tunesmith.errors import UserError
from tunesmith.tasks import TaskDefaults, register_task

# The knowledge-base names (prompt/response, instruction/output) too: the assistant trains its
# retriever on a knowledge base file as it is.
QUERY_COLUMNS = ("anchor", "query", "question", "sentence1", "text_a", "q", "prompt", "instruction")
POSITIVE_COLUMNS = ("positive", "pos", "answer", "passage", "document", "sentence2", "text_b", "doc", "a", "response",
                    "output", "reply")
NEGATIVE_COLUMNS = ("negative", "neg", "hard_negative", "negative_passage")
SCORE_COLUMNS = ("score", "similarity", "label", "relatedness")
SCALE = 20.0  # cosine similarities times 20 before the softmax: sentence-transformers' default
RETRIEVAL = ("ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10")  # the metrics of query-positive pairs
SIMILARITY = ("spearman", "pearson")  # the metrics of scored pairs
K = 10  # recall@10, MRR@10, NDCG@10: the retrieval cut-off the MTEB and BEIR tables use
E5_PROMPTS = {"query": "query: ", "passage": "passage: "}  # as intfloat's model cards prescribe
PROMPTS_FILE = "config_sentence_transformers.json"


class PromptedTokenizer:
    """The tokenizer, and the prompts the model reads in front of queries and passages; saving
    it writes both (the prompts where sentence-transformers looks for them)."""

    def __init__(self, tokenizer, prompts: dict[str, str]):
        self.tokenizer, self.embedding_prompts = tokenizer, prompts

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, *args, **kwargs):
        return self.tokenizer(*args, **kwargs)

    def save_pretrained(self, folder: str, **kwargs) -> None:
        from tunesmith.io import write_text

        self.tokenizer.save_pretrained(folder, **kwargs)
        settings = {"prompts": self.embedding_prompts, "default_prompt_name": "query", "similarity_fn_name": "cosine"}
        write_text(Path(folder) / PROMPTS_FILE, json.dumps(settings, indent=2) + "\n")


def model_prompts(source: str, name: str | None) -> dict[str, str]:
    """The prompts a model was trained with: its folder's sentence-transformers settings, else
    E5's for a model of that family (by name), else none."""
    saved = Path(source) / PROMPTS_FILE
    if saved.is_file():
        prompts = json.loads(saved.read_text(encoding="utf-8")).get("prompts") or {}
        prompts = {"query": prompts.get("query", ""), "passage": prompts.get("passage", prompts.get("document", ""))}
        return prompts if any(prompts.values()) else {}
    words = str(name or source).lower().replace("_", "-").rstrip("/").split("/")[-1].split("-")
    return dict(E5_PROMPTS) if "e5" in words else {}


def _prompted(tokenizer, kind: str, texts: list[str]) -> list[str]:
    prompt = getattr(tokenizer, "embedding_prompts", {}).get(kind, "")
    return [prompt + text for text in texts] if prompt else list(texts)


@dataclass
class Retrieval:
    """A split's queries and corpus as vectors, and which corpus entries answer each query."""

    queries: np.ndarray
    corpus: np.ndarray
    relevant: list[set[int]]
    cosines: np.ndarray  # each pair's query against its own positive (what scored pairs are scored on)


@dataclass
class Similarities:
    """A split's scored pairs: the cosine of each pair's two vectors."""

    cosines: np.ndarray


class ScoredFeatures(Features):
    """Rows of two texts' token ids (`anchor`, `positive`) and, for training, the pair's `score`."""


@dataclass
class PairFeatures(Features):
    corpus: list[list[int]] = field(default_factory=list)  # token ids of each distinct passage
    relevant: list[set[int]] = field(default_factory=list)  # per example: its query's passages


class SentenceEmbedder(torch.nn.Module):
    """The body, its last hidden states pooled (mean over real tokens, or [CLS]) and normalised."""

    base_model_prefix = "body"

    def __init__(self, body, pooling: str):
        super().__init__()
        self.body, self.pooling, self.config = body, pooling, body.config

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **_) -> torch.Tensor:
        from tunesmith.evaluate.baseline import masked_mean

        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        pooled = masked_mean(hidden, attention_mask) if self.pooling == "mean" else hidden[:, 0]
        return torch.nn.functional.normalize(pooled, dim=-1)

    def get_input_embeddings(self):
        return self.body.get_input_embeddings()

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.body.gradient_checkpointing_enable(**kwargs)

    def save_pretrained(self, folder: str, **_) -> None:
        """A sentence-transformers folder: the body as a transformers model, then pooling and
        normalisation modules, as `SentenceTransformer(folder)` reads them."""
        from tunesmith.io import write_text

        self.body.save_pretrained(folder)
        root = Path(folder)
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
        write_text(root / "modules.json", json.dumps(modules, indent=2) + "\n")
        (root / "1_Pooling").mkdir(exist_ok=True)
        (root / "2_Normalize").mkdir(exist_ok=True)
        pooling = {"word_embedding_dimension": self.config.hidden_size,
                   "pooling_mode_cls_token": self.pooling == "cls", "pooling_mode_mean_tokens": self.pooling == "mean",
                   "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}
        write_text(root / "1_Pooling" / "config.json", json.dumps(pooling, indent=2) + "\n")

    @classmethod
    def build(cls, source: str, pooling: str) -> "SentenceEmbedder":
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(source), pooling)

    @classmethod
    def from_folder(cls, folder: str) -> "SentenceEmbedder":
        from transformers import AutoModel

        from tunesmith.tasks.mean_pool import trained_pooling

        body = AutoModel.from_pretrained(folder, use_safetensors=True)  # a run folder is never unpickled
        return cls(body, trained_pooling(folder)).eval()


class SentenceEmbedding(TaskDefaults):
    name = "sentence-embedding"
    pipeline_tag = "sentence-similarity"
    answer = "embedding"
    peft_task_type = "FEATURE_EXTRACTION"
    default_model = "minilm"
    metrics_higher_is_better = {name: True for name in RETRIEVAL + SIMILARITY}
    default_metric = "ndcg_at_10"
    has_baseline = True
    baseline_name = "the untuned model's embeddings"
    mean_pooling = True  # pooled as the backbone was trained: the mean for sentence-transformers models
    exportable = True  # token ids in, one normalised vector out
    quantisable = True
    # In-batch negatives need examples beside each other: the loss is the model's own (no
    # labels), and only methods that tune the body's weights or adapters in it apply.
    methods = ("full", "lora")
    output_suffixes = (".csv", ".tsv", ".jsonl", ".json", ".npy")  # .npy: the vectors alone, in input order
    sequences_per_example = 3  # a query, its positive, a hard negative when given
    train_defaults = {"method": "full"}

    # ---- data -------------------------------------------------------------------------------
    def load_data(self, cfg) -> Splits:
        if not cfg.data:
            raise UserError("no training data: pass --data FILE with query and positive columns (anchor, positive)")
        tables = read_source(cfg.data, cfg.encoding)
        for key, given in (("val", cfg.val_data), ("test", cfg.test_data)):
            if given:  # a file given for a split replaces the source's own
                tables[key] = read_source(given, cfg.encoding)["all"]
        train = _read_pairs(tables.get("train", tables.get("all")))
        val, test = (_read_pairs(tables[key]) if key in tables else None for key in ("val", "test"))
        for name, split in (("validation", val), ("test", test)):
            if split is not None and scored(split) != scored(train):
                raise UserError(f"{split.source}: the {name} split {'has' if scored(split) else 'has no'} score "
                                f"column but the training data {'has' if scored(train) else 'has none'}; give all "
                                "splits the same columns")
        notes: list[str] = []
        if val is None or test is None:
            train, val, test = _carve_by_query(train, val, test, cfg, notes)
        limits = (cfg.max_train_samples, cfg.max_eval_samples, cfg.max_eval_samples)
        train, val, test = (sample(split, limit, cfg.seed, lambda labels: ["all"] * len(labels))
                            for split, limit in zip((train, val, test), limits))
        for name, split in (("train", train), ("validation", val), ("test", test)):
            if len(split) < 2:
                raise UserError(f"{cfg.data}: the {name} split has {len(split)} pair(s); scoring needs at least 2 "
                                "(add pairs, or give --val-data / --test-data)")
        if scored(train) and len(set(train.labels)) < 2:
            raise UserError(f"{cfg.data}: every training pair has the same score; the scores must differ to teach "
                            "which pairs are more alike")
        return Splits(train, val, test, [], "anchor", "positive", notes)

    def planned(self, cfg, splits, source: str) -> dict:
        """Scored pairs are scored by Spearman's correlation, pairs by retrieval (NDCG@10)."""
        kind = SIMILARITY if scored(splits.train) else RETRIEVAL
        if cfg.metric and cfg.metric not in kind:
            raise UserError(f"--metric {cfg.metric}: these data are {'scored pairs' if kind is SIMILARITY else 'pairs'}, "
                            f"scored by {', '.join(kind)}")
        if cfg.metric is None and kind is SIMILARITY:
            return {"metric": ("spearman", "the data are scored pairs")}
        return {}

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8") -> Examples:
        tables = read_source(source, encoding)
        return _read_pairs(tables.get("all") or tables.get("test"))

    def check(self, splits: Splits, tokenizer, max_length: int) -> CheckReport:
        report = CheckReport()
        parts = {"train": splits.train, "val": splits.val, "test": splits.test}
        report.facts["rows"] = {name: len(ex) for name, ex in parts.items()}
        report.facts["notes"] = list(splits.notes)
        check_shared_keys(report, parts, "anchor", "queries also appear in train")
        same = [i for i, pair in enumerate(splits.train.texts) if pair["anchor"] == pair["positive"]]
        if same:
            report.warnings.append(f"{len(same)} training rows have the same query and positive "
                                   f"({', '.join(splits.train.where[i] for i in same[:3])}); they teach nothing")
        if getattr(tokenizer, "embedding_prompts", None):
            report.facts["prompts"] = dict(tokenizer.embedding_prompts)
        if tokenizer is not None:
            texts = [t for ex in parts.values() for pair in ex.texts for t in pair.values()]
            lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]])
            long = int((lengths > max_length).sum())
            report.facts["token_lengths"] = {"count": int(len(lengths)), "p50": int(np.percentile(lengths, 50)),
                                             "p90": int(np.percentile(lengths, 90)), "p99": int(np.percentile(lengths, 99)),
                                             "max": int(lengths.max()), "max_length": max_length, "truncated": long,
                                             "truncated_pct": 100.0 * long / len(lengths)}
            if long:
                report.warnings.append(f"{long} texts are longer than max_length {max_length} tokens and will be cut")
        return report

    # ---- model ------------------------------------------------------------------------------
    def build_model(self, source: str, labels: list[str], pooling: str = "cls"):
        """The body pooled as the plan says: how the backbone was trained, unless --pooling."""
        return SentenceEmbedder.build(source, pooling)

    def load_model(self, folder: str):
        return SentenceEmbedder.from_folder(folder)

    def load_processor(self, source: str, cfg=None):
        from tunesmith import models

        tokenizer = models.load_tokenizer(source)
        prompts = model_prompts(source, cfg.model if cfg is not None else None)
        return PromptedTokenizer(tokenizer, prompts) if prompts else tokenizer

    # ---- features, loss, prediction, metrics -------------------------------------------------
    def encode(self, tokenizer, inputs, targets, labels, max_length, use_cache=True, augment=False,
               long_text=None) -> Features:
        from tunesmith.data.tokens import tokenize

        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if inputs and (isinstance(inputs[0], str) or "passage" in inputs[0]):  # texts to embed (predict, serve)
            texts = [_prompted(tokenizer, "passage", [text["passage"]])[0] if isinstance(text, dict)
                     else _prompted(tokenizer, "query", [text])[0] for text in inputs]
            ids = tokenize(tokenizer, texts, max_length, use_cache=use_cache)
            return Features([{"input_ids": i} for i in ids], pad_id)
        if targets is not None and targets and not isinstance(targets[0], str):  # scored pairs
            return _scored_features(tokenizer, inputs, targets, max_length, pad_id, use_cache)
        texts = sorted({t for pair in inputs for key, t in pair.items() if key != "anchor"})
        corpus_id = {text: i for i, text in enumerate(texts)}
        queries = tokenize(tokenizer, _prompted(tokenizer, "query", [pair["anchor"] for pair in inputs]), max_length,
                           use_cache=use_cache)
        corpus = tokenize(tokenizer, _prompted(tokenizer, "passage", texts), max_length, use_cache=use_cache)
        answers: dict[str, set[int]] = {}
        for pair in inputs:
            answers.setdefault(pair["anchor"], set()).add(corpus_id[pair["positive"]])
        query_id = {text: i for i, text in enumerate(dict.fromkeys(pair["anchor"] for pair in inputs))}
        rows = []
        for pair, query in zip(inputs, queries):
            # The keys let the loss tell a repeated text in a batch from a true negative.
            row = {"anchor": query, "positive": corpus[corpus_id[pair["positive"]]],
                   "query_key": query_id[pair["anchor"]], "passage_key": corpus_id[pair["positive"]]}
            if "negative" in pair:
                row["negative"] = corpus[corpus_id[pair["negative"]]]
            row["length"] = max(len(row[key]) for key in ("anchor", "positive", "negative") if key in row)
            rows.append(row)
        return PairFeatures(rows, pad_id, collate=lambda batch: _collate(batch, pad_id), corpus=corpus,
                            relevant=[answers[pair["anchor"]] for pair in inputs])

    def training_loss(self, model, batch, processor=None):
        """Multiple-negatives ranking loss, both directions: each query against every passage
        of the batch, and each positive against every query. A passage (or query) that occurs
        twice in a batch is no negative of itself: those repeats are left out of the softmax.
        Scored pairs: CoSENT (`cosent_loss`)."""
        count = int(batch["examples"][0])
        vectors = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        if "score" in batch:
            return cosent_loss((vectors[:count] * vectors[count:]).sum(-1), batch["score"]), {}
        queries, passages = vectors[:count], vectors[count:]
        scores = SCALE * queries @ passages.T  # (count, count or 2 x count): own positive on the diagonal
        own = torch.eye(count, dtype=torch.bool, device=scores.device)
        repeated_passage = (batch["passage_key"][:, None] == batch["passage_key"][None, :]) & ~own
        repeated_query = (batch["query_key"][:, None] == batch["query_key"][None, :]) & ~own
        positives = scores[:, :count]
        target = torch.arange(count, device=scores.device)
        forward = torch.nn.functional.cross_entropy(
            torch.cat([positives.masked_fill(repeated_passage, -1e4), scores[:, count:]], dim=1), target)
        backward = torch.nn.functional.cross_entropy(positives.T.masked_fill(repeated_query, -1e4), target)
        return (forward + backward) / 2, {}

    def predict(self, model, features: Features, batch_size: int = 64):
        if isinstance(features, ScoredFeatures):
            first, second = (_embed(model, [row[key] for row in features.rows], features.pad_id, batch_size)
                             for key in ("anchor", "positive"))
            return Similarities((first * second).sum(axis=1))
        if not isinstance(features, PairFeatures):
            return _embed(model, [row["input_ids"] for row in features.rows], features.pad_id, batch_size)
        queries = _embed(model, [row["anchor"] for row in features.rows], features.pad_id, batch_size)
        corpus = _embed(model, features.corpus, features.pad_id, batch_size)
        own = corpus[[row["passage_key"] for row in features.rows]]
        return Retrieval(queries, corpus, features.relevant, (queries * own).sum(axis=1))

    def metrics(self, targets, outputs, labels) -> dict:
        if targets and not isinstance(targets[0], str):  # scored pairs (read back without their scores, or with)
            return similarity_metrics(outputs.cosines, np.asarray(targets, dtype=float))
        return retrieval_metrics(outputs.queries @ outputs.corpus.T, outputs.relevant)

    def summary(self, metrics: dict) -> str:
        if "spearman" in metrics:
            return f"Spearman {metrics['spearman']:.4f}, Pearson {metrics['pearson']:.4f} ({metrics['count']} pairs)"
        return (f"NDCG@10 {metrics['ndcg_at_10']:.4f}, MRR@10 {metrics['mrr_at_10']:.4f}, recall@1 "
                f"{metrics['recall_at_1']:.4f}, recall@10 {metrics['recall_at_10']:.4f} "
                f"({metrics['count']} queries, {metrics['corpus']} passages)")

    def tune_on_validation(self, model, features, targets, labels) -> dict:
        return {}

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        return self.metrics(test_targets, self.predict(model, test), labels)

    # ---- `predict` on a file, serving ---------------------------------------------------------
    def read_inputs(self, path: str, encoding: str, text_col: str | None, text_pair_col: str | None = None):
        table = read_source(path, encoding).get("all")
        if table is None:
            raise UserError(f"{path}: give a CSV, TSV, JSONL or text file of texts to embed")
        column = pick_column(table, text_col, TEXT_COLUMNS + QUERY_COLUMNS + POSITIVE_COLUMNS, "text", "--text-col")
        return table.frame.to_dict("records"), table.frame[column].tolist()

    def write_predictions(self, path: Path, rows, outputs, labels) -> None:
        """Vectors as .npy (one row per input, in order), or beside each row as `embedding`."""
        from tunesmith.forward import write_rows
        from tunesmith.io import atomic_path

        if path.suffix.lower() == ".npy":
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, np.asarray(outputs, dtype=np.float32))
            return
        write_rows(path, [{**row, "embedding": [round(float(v), 6) for v in vector]} for row, vector in zip(rows, outputs)])

    def serve_input(self, value, pairs: bool):
        if not isinstance(value, str):
            raise ValueError("give a text (a string) to embed")
        return value

    def output_rows(self, outputs) -> list:
        return list(outputs)

    def serve_output(self, value, row, labels: list[str], top_k: int | None) -> dict:
        return {"embedding": [float(v) for v in row]}

    def card_usage(self) -> list[str]:
        return ["```python", "from sentence_transformers import SentenceTransformer", "",
                'model = SentenceTransformer("path/to/model")',
                'vectors = model.encode(["a query", "another query"], normalize_embeddings=True)',
                "# A model trained with prompts (E5's query: / passage:) puts the query prompt in front by default;",
                "# embed the texts to search as passages:",
                'passages = model.encode(["a passage"], prompt_name="passage", normalize_embeddings=True)', "```"]


def cosent_loss(cosines: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """CoSENT: log(1 + sum over pairs (i, j) with score_i > score_j of exp(SCALE * (cos_j - cos_i))),
    computed as a log-sum-exp with a zero term for the 1."""
    differences = SCALE * (cosines[None, :] - cosines[:, None])  # [i, j]: cos_j - cos_i
    ordered = scores[:, None] > scores[None, :]  # pair i should be closer than pair j
    terms = differences.masked_fill(~ordered, -1e4).flatten()
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)


def similarity_metrics(cosines: np.ndarray, scores: np.ndarray) -> dict:
    """Spearman's and Pearson's correlation of the cosines with the gold scores."""
    from scipy.stats import pearsonr, spearmanr

    if len(cosines) < 2 or np.ptp(scores) == 0 or np.ptp(cosines) == 0:
        return {"spearman": 0.0, "pearson": 0.0, "count": len(cosines)}
    return {"spearman": float(spearmanr(cosines, scores).statistic), "pearson": float(pearsonr(cosines, scores).statistic),
            "count": len(cosines)}


def retrieval_metrics(scores: np.ndarray, relevant: list[set[int]]) -> dict:
    """recall@1, recall@10, MRR@10 and NDCG@10 (binary relevance) of each query's ranking of
    the corpus, averaged over queries; `scores` is queries x corpus."""
    order = np.argsort(-scores, axis=1)[:, :K]
    recall_1, recall_k, mrr, ndcg = [], [], [], []
    for ranked, answers in zip(order, relevant):
        hits = [int(doc) in answers for doc in ranked]
        recall_1.append(float(hits[0]))
        recall_k.append(sum(hits) / len(answers))
        mrr.append(next((1.0 / (rank + 1) for rank, hit in enumerate(hits) if hit), 0.0))
        dcg = sum(1.0 / np.log2(rank + 2) for rank, hit in enumerate(hits) if hit)
        ideal = sum(1.0 / np.log2(rank + 2) for rank in range(min(len(answers), K)))
        ndcg.append(dcg / ideal)
    return {"ndcg_at_10": float(np.mean(ndcg)), "mrr_at_10": float(np.mean(mrr)),
            "recall_at_1": float(np.mean(recall_1)), "recall_at_10": float(np.mean(recall_k)),
            "count": len(relevant), "corpus": int(scores.shape[1])}


def _embed(model, token_ids: list[list[int]], pad_id: int, batch_size: int) -> np.ndarray:
    from tunesmith.data.batching import collate
    from tunesmith.forward import evaluating

    out = None
    with evaluating(model) as device:
        for indices in inference_batches([len(ids) for ids in token_ids], batch_size):
            batch = collate([token_ids[i] for i in indices], pad_id)
            vectors = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            # An ONNX graph (runtimes.OnnxModel) answers like a classifier, its one output as `logits`.
            vectors = (vectors if isinstance(vectors, torch.Tensor) else vectors.logits).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(token_ids), vectors.shape[1]), dtype=np.float32)
            out[indices] = vectors
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def _collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Queries, then positives, then negatives (when every row has one), in one padded batch."""
    from tunesmith.data.batching import collate

    sequences = [r["anchor"] for r in rows] + [r["positive"] for r in rows]
    if all("negative" in r for r in rows):
        sequences += [r["negative"] for r in rows]
    batch = collate(sequences, pad_id)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "examples": torch.tensor([len(rows)]), "query_key": torch.tensor([r["query_key"] for r in rows]),
            "passage_key": torch.tensor([r["passage_key"] for r in rows])}


def scored(examples: Examples) -> bool:
    """Whether examples are scored pairs (a number each) rather than query-positive pairs."""
    return bool(examples.labels) and not isinstance(examples.labels[0], str)


def _read_pairs(table: Table) -> Examples:
    """(query, positive[, negative]) rows of a table, or (text, text, score) rows, each cell checked."""
    if table is None:
        raise UserError("no training split found")
    columns = {str(c).lower(): c for c in table.frame.columns}
    query = next((columns[name] for name in QUERY_COLUMNS if name in columns), None)
    positive = next((columns[name] for name in POSITIVE_COLUMNS if name in columns), None)
    if query is None or positive is None:
        raise UserError(f"{table.source}: cannot tell the query and the positive columns; columns are: "
                        f"{', '.join(map(str, table.frame.columns))}; name them anchor and positive (or query and "
                        "passage, question and answer)")
    negative = next((columns[name] for name in NEGATIVE_COLUMNS if name in columns), None)
    score = next((columns[name] for name in SCORE_COLUMNS if name in columns), None)
    if score is not None and negative is not None:
        raise UserError(f"{table.source}: has both a score column ({score}) and a negative column ({negative}); give "
                        "scored pairs (sentence1, sentence2, score) or triplets (anchor, positive, negative)")
    pairs, where, scores = [], [], []
    for index, record in enumerate(table.frame.to_dict("records")):
        pair = {"anchor": str(record[query]).strip(), "positive": str(record[positive]).strip()}
        if negative is not None:
            pair["negative"] = str(record[negative]).strip()
        empty = next((key for key, text in pair.items() if not text), None)
        if empty:
            raise UserError(f"{table.where(index)}: the {empty} text is empty; fill it in or remove the row")
        if score is not None:
            scores.append(_score(record[score], table.where(index), score))
        pairs.append(pair)
        where.append(table.where(index))
    return Examples(pairs, scores if score is not None else [""] * len(pairs), table.source, where)


def _score(value, where: str, column) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise UserError(f"{where}: column '{column}' holds {value!r}, not a number; give each pair's similarity score")
    return number


def _scored_features(tokenizer, inputs, targets, max_length: int, pad_id: int, use_cache: bool) -> ScoredFeatures:
    from tunesmith.data.tokens import tokenize

    # Scored pairs are symmetric: both texts read as queries, as E5's card says for similarity.
    first, second = (tokenize(tokenizer, _prompted(tokenizer, "query", [pair[key] for pair in inputs]), max_length,
                              use_cache=use_cache) for key in ("anchor", "positive"))
    rows = [{"anchor": a, "positive": b, "score": float(s), "length": max(len(a), len(b))}
            for a, b, s in zip(first, second, targets)]
    return ScoredFeatures(rows, pad_id, collate=lambda batch: _collate_scored(batch, pad_id))


def _collate_scored(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """First texts, then second texts, in one padded batch, with each pair's score."""
    from tunesmith.data.batching import collate

    batch = collate([r["anchor"] for r in rows] + [r["positive"] for r in rows], pad_id)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "examples": torch.tensor([len(rows)]), "score": torch.tensor([r["score"] for r in rows])}


def _carve_by_query(train: Examples, val, test, cfg, notes: list[str]):
    """Validation and test carved from training by query: every pair of one query lands in one
    split, so a test query was never trained on (exact repeats of a pair are dropped first)."""
    seen, keep = set(), []
    for i, pair in enumerate(train.texts):
        key = tuple(sorted(pair.items()))
        if key not in seen:
            seen.add(key)
            keep.append(i)
    if len(keep) < len(train):
        notes.append(f"removed {len(train) - len(keep)} repeated pairs before splitting")
    train = train.subset(keep)
    queries = sorted({pair["anchor"] for pair in train.texts})
    missing = [name for name, split in (("val", val), ("test", test)) if split is None]
    fractions = [cfg.val_fraction if name == "val" else cfg.test_fraction for name in missing]
    groups = stratified_indices(["all"] * len(queries), fractions, cfg.seed)
    group_of = {queries[i]: k for k, members in enumerate(groups) for i in members}
    rows = [[i for i, pair in enumerate(train.texts) if group_of[pair["anchor"]] == k] for k in range(len(groups))]
    carved = {name: train.subset(rows[k]) for k, name in enumerate(missing)}
    val, test = carved.get("val", val), carved.get("test", test)
    train = train.subset(rows[-1])
    notes.append(f"split {cfg.data} by query: train {len(train)}/val {len(val)}/test {len(test)} pairs (seed {cfg.seed})")
    return train, val, test


register_task(SentenceEmbedding())
