"""Token classification (NER): a tag per word, entities out.

Words are split into sub-words by the model's tokenizer; the word's tag goes on its first
sub-word and the other sub-words are ignored by the loss (label -100), the usual recipe
(Devlin et al. 2019). Sentences longer than `max_length` sub-words are cut into windows
at word boundaries instead of being truncated, so every word is trained on and predicted.
Predictions come back per word (the first sub-word's distribution) and decode to entities.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from tunesmith.data.batching import IGNORE, Features
from tunesmith.data.checks import CheckReport
from tunesmith.data.labeled import TEXT_COLUMNS, Examples, pick_column
from tunesmith.data.sources import decode_file, json_lines, read_source
from tunesmith.data.split import stratified_indices
from tunesmith.data.splits import Splits
from tunesmith.data.tagged import (
    CJK, TAG, Sentence, detect_scheme, entity_type, normalise, read_tagged_file, read_tagged_source, spans, split_words,
    validate_tags,
)
from tunesmith.errors import UserError
from tunesmith.evaluate.entities import HIGHER_IS_BETTER, entity_metrics
from tunesmith.forward import INFERENCE_BATCH, forward_batches, softmax, write_rows
from tunesmith.tasks import TaskDefaults, register_task


class TokenClassification(TaskDefaults):
    name = "token-classification"
    pipeline_tag = "token-classification"
    answer = "entities"
    peft_task_type = "TOKEN_CLS"
    default_model = "minilm"
    # --long-text: truncate only; long sentences are already cut into overlapping windows
    metrics_higher_is_better = HIGHER_IS_BETTER
    has_baseline = False  # a per-word linear probe says little about entity spans
    exportable = True  # token ids in, a row of tag logits per token out
    quantisable = True
    default_metric = "f1"
    # A tagger's head starts from nothing on every token and learns spans from few labelled
    # words: at the sequence tasks' defaults it is badly undertrained after 3 passes. Full
    # fine-tuning at 2e-4 was the best or near it on English and Chinese backbones; LoRA keeps its
    # own 5e-4, the only rate that did not collapse to "no entity" on e5-small (docs/benchmarks.md,
    # "NER defaults").
    train_defaults = {"method": "full"}
    NER_LR = {"full": 2e-4}

    def default_lr(self, method: str, model: str) -> float | None:
        return self.NER_LR.get(method)  # other methods: their own default

    # ---- data ---------------------------------------------------------------------
    def load_data(self, cfg) -> Splits:
        if not cfg.data:
            raise UserError("no training data: pass --data FILE (CoNLL or JSONL with tokens and tags) or a folder")
        parts = read_tagged_source(cfg.data, cfg.encoding)
        train = parts.get("train", parts.get("all"))
        val = read_tagged_file(Path(cfg.val_data), cfg.encoding) if cfg.val_data else parts.get("val")
        test = read_tagged_file(Path(cfg.test_data), cfg.encoding) if cfg.test_data else parts.get("test")
        for group in (train, val, test):
            if group is not None:
                validate_tags(group)
        # The scheme is a property of the data set: decided on train, applied to every split.
        scheme = detect_scheme(train)
        notes = ["tags are IOB1; converted to BIO"] if scheme == "iob1" else []
        warnings = []
        for name, group in (("train", train), ("val", val), ("test", test)):
            if group is not None:
                warnings += [f"{name}: {w}" for w in normalise(group, scheme)]

        missing = [name for name, group in (("val", val), ("test", test)) if group is None]
        if missing:
            train, removed = _dedupe(train)
            if removed:
                notes.append(f"removed {removed} exact duplicate sentences before splitting")
            fractions = [cfg.val_fraction if name == "val" else cfg.test_fraction for name in missing]
            groups = stratified_indices(["all"] * len(train), fractions, cfg.seed)
            carved = {name: [train[i] for i in groups[k]] for k, name in enumerate(missing)}
            train = [train[i] for i in groups[-1]]
            val, test = carved.get("val", val), carved.get("test", test)
            notes.append(f"split {cfg.data} train {len(train)}/val {len(val)}/test {len(test)} sentences (seed {cfg.seed})")

        types = sorted({entity_type(t) for s in train for t in s.tags} - {None})
        if not types:
            raise UserError(f"{train[0].source}: no entities in the training data (every tag is O)")
        for name, group in (("validation", val), ("test", test)):
            unseen = sorted({entity_type(t) for s in group for t in s.tags} - {None} - set(types))
            if unseen:
                raise UserError(f"{group[0].source}: {name} entity types never seen in training: "
                                f"{', '.join(unseen[:5])}; add training examples or remove those tags")
        labels = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
        splits = []
        for group, limit in ((train, cfg.max_train_samples), (val, cfg.max_eval_samples), (test, cfg.max_eval_samples)):
            if limit is not None and len(group) > limit:
                keep, _ = stratified_indices(["all"] * len(group), [limit / len(group)], cfg.seed)
                group = [group[i] for i in keep]
            if not group:
                raise UserError(f"{cfg.data}: a split is empty; add sentences or give --val-data / --test-data")
            splits.append(_examples(group))
        return Splits(*splits, labels, "tokens", "tags", notes, warnings)

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8") -> Examples:
        parts = read_tagged_source(source, encoding)
        group = parts.get("test", parts.get("all"))
        validate_tags(group)
        normalise(group, detect_scheme(group))
        unseen = sorted({t for s in group for t in s.tags} - set(labels))
        if unseen:
            raise UserError(f"{source}: tags the run was not trained on: {', '.join(unseen[:5])}")
        return _examples(group)

    def check(self, splits: Splits, tokenizer, max_length: int) -> CheckReport:
        report = CheckReport()
        parts = {"train": splits.train, "val": splits.val, "test": splits.test}
        report.facts["rows"] = {name: len(ex) for name, ex in parts.items()}
        counts = Counter(kind for tags in splits.train.labels for kind, _, _ in spans(tags))
        report.facts["label_counts"] = dict(counts.most_common())
        report.facts["imbalance_ratio"] = max(counts.values()) / min(counts.values())
        report.facts["notes"] = list(splits.notes)
        report.warnings += splits.warnings
        for kind, count in counts.items():
            if count < 5:
                report.warnings.append(f"entity type '{kind}' has only {count} training example(s)")
        train_sentences = {tuple(words) for words in splits.train.texts}
        for name in ("val", "test"):
            ex = parts[name]
            shared = [i for i, words in enumerate(ex.texts) if tuple(words) in train_sentences and len(words) > 3]
            report.facts[f"train_{name}_overlap"] = len(shared)
            if shared:
                report.warnings.append(f"{len(shared)} {name} sentences (of more than 3 words) also appear in train "
                                       f"(leakage: the {name} score will be too high) ({_where(ex, shared)})")
        if tokenizer is not None:
            pieces = _WordPieces(tokenizer)
            lengths = np.array([pieces.length(words) for ex in parts.values() for words in ex.texts])
            where = [w for ex in parts.values() for w in ex.where]
            long = np.flatnonzero(lengths > max_length)
            report.facts["token_lengths"] = {
                "count": int(len(lengths)), "p50": int(np.percentile(lengths, 50)), "p90": int(np.percentile(lengths, 90)),
                "p99": int(np.percentile(lengths, 99)), "max": int(lengths.max()), "max_length": max_length,
                "truncated": int(len(long)), "truncated_pct": 100.0 * len(long) / len(lengths),
            }
            if len(long):
                shown = ", ".join(where[i] for i in long[:3]) + (", ..." if len(long) > 3 else "")
                report.warnings.append(f"{len(long)} sentences are longer than max_length {max_length} sub-words and "
                                       f"will be cut into windows ({shown}); --max-length {int(lengths.max())} keeps them whole")
        return report

    # ---- model --------------------------------------------------------------------
    def build_model(self, source: str, labels: list[str], pooling: str = "cls"):
        from transformers import AutoModelForTokenClassification

        from tunesmith.models import with_new_head

        return with_new_head(AutoModelForTokenClassification, source, labels)

    def load_model(self, folder: str):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(folder, use_safetensors=True)

    # ---- features, prediction, metrics ------------------------------------------------
    def load_processor(self, source: str, cfg=None):
        from tunesmith import models

        return models.load_tokenizer(source)

    def encode(self, tokenizer, inputs, targets, labels, max_length, use_cache=True, augment=False,
               long_text=None) -> Features:
        pieces = _WordPieces(tokenizer)
        tag_id = {label: i for i, label in enumerate(labels)}
        rows, meta = [], []
        for index, words in enumerate(inputs):
            tags = targets[index] if targets is not None else None
            for start, ids, positions in pieces.windows(words, max_length):
                row = {"input_ids": ids}
                if tags is not None:
                    token_labels = [IGNORE] * len(ids)
                    for k, position in enumerate(positions):
                        token_labels[position] = tag_id[tags[start + k]]
                    row["labels"] = token_labels
                rows.append(row)
                meta.append({"sentence": index, "first_word": start, "positions": positions})
        return Features(rows, pieces.pad_id, token_labels=True, meta=meta)

    def predict(self, model, features: Features, batch_size: int = INFERENCE_BATCH) -> list[np.ndarray]:
        """Per sentence, a (words x tags) array of probabilities."""
        count = max((m["sentence"] for m in features.meta), default=-1) + 1
        words = [0] * count
        for m in features.meta:
            words[m["sentence"]] = max(words[m["sentence"]], m["first_word"] + len(m["positions"]))
        out = [np.zeros((n, model.config.num_labels), dtype=np.float32) for n in words]
        for indices, logits in forward_batches(model, features, batch_size):
            probs = softmax(logits)
            for row, i in enumerate(indices):
                m = features.meta[i]
                first = m["first_word"]
                out[m["sentence"]][first : first + len(m["positions"])] = probs[row, m["positions"]]
        return out

    def metrics(self, targets, outputs, labels) -> dict:
        return entity_metrics(targets, decode(outputs, labels))

    def summary(self, metrics: dict) -> str:
        return (f"entity F1 {metrics['f1']:.4f} (precision {metrics['precision']:.4f}, recall {metrics['recall']:.4f}), "
                f"{metrics['entities']} entities")

    def tune_on_validation(self, model, features, targets, labels) -> dict:
        return {}  # argmax over tags needs no threshold

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed):
        raise NotImplementedError("token-classification has no baseline (has_baseline is False)")

    # ---- `predict` on a file ------------------------------------------------------------
    def read_inputs(self, path: str, encoding: str, text_col: str | None, text_pair_col: str | None = None):
        """Rows with a `text` (raw, or the given words joined by spaces) and the words of each."""
        if looks_tagged(Path(path)):
            sentences = _read_words(Path(path), encoding)
            rows = [{"text": " ".join(words)} for words in sentences]
            return rows, sentences
        table = read_source(path, encoding).get("all")
        if table is None:
            raise UserError(f"{path}: give a CSV, TSV, JSONL or text file of texts, or CoNLL/JSONL tokens")
        column = pick_column(table, text_col, TEXT_COLUMNS, "text", "--text-col")
        rows = table.frame.to_dict("records")
        for row in rows:
            row["_text"] = row[column]
        return rows, [split_words(row[column])[0] for row in rows]

    def write_predictions(self, path: Path, rows, outputs, labels) -> None:
        records = []
        for row, word_tags, probs in zip(rows, decode(outputs, labels), outputs):
            text = row.pop("_text", row.get("text", ""))
            records.append({**row, "entities": entities(text, word_tags, probs)})
        write_rows(path, records)

    # ---- serving ---------------------------------------------------------------------------
    def serve_input(self, value, pairs: bool):
        if not isinstance(value, str):
            raise ValueError("give a text (a string)")
        return split_words(value)[0]

    def output_rows(self, outputs) -> list:
        return list(outputs)

    def serve_output(self, value: str, row, labels: list[str], top_k: int | None) -> dict:
        return {"entities": entities(value, decode([row], labels)[0], row)}


def decode(outputs: list[np.ndarray], labels: list[str]) -> list[list[str]]:
    return [[labels[i] for i in probs.argmax(axis=1)] if len(probs) else [] for probs in outputs]


def entities(text: str, tags: list[str], probs: np.ndarray) -> list[dict]:
    """Entities with character offsets into `text` and a score (mean top probability of their words)."""
    _words, offsets = split_words(text)
    found = []
    for kind, first, end in spans(tags):
        start, stop = offsets[first][0], offsets[end - 1][1]
        found.append({"type": kind, "text": text[start:stop], "start": start, "end": stop,
                      "score": round(float(probs[first:end].max(axis=1).mean()), 6)})
    return found


CJK_START = re.compile(CJK)  # a word that begins with a Chinese or Japanese character


class _WordPieces:
    """Sub-word ids per word, each distinct word tokenised once (fast and slow tokenizers alike)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.cache: dict[str, list[int]] = {}
        # The special tokens around a sequence ([CLS] ... [SEP] for BERT), found by difference.
        bare = tokenizer("x", add_special_tokens=False)["input_ids"]
        full = tokenizer("x", add_special_tokens=True)["input_ids"]
        at = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        self.prefix, self.suffix = full[:at], full[at + len(bare) :]
        # Byte-level BPE (GPT-2, RoBERTa) marks a word-initial space in the token itself:
        # there, words after the first are tokenised with their leading space.
        self.space_marked = tokenizer("a b", add_special_tokens=False)["input_ids"] != (
            tokenizer("a", add_special_tokens=False)["input_ids"] + tokenizer("b", add_special_tokens=False)["input_ids"])
        # SentencePiece (XLM-R, e5-small) starts every word with a word-boundary piece; for a
        # Chinese character that is a lone "▁" piece before it (中 -> ▁, 中), which doubles the
        # length of Chinese text tokenised a character at a time and puts every label on the same
        # "▁" piece. Raw Chinese text has no spaces, so the tokenizer itself never puts one inside
        # it: the lone piece is dropped for CJK words.
        lone = tokenizer("中", add_special_tokens=False)["input_ids"]
        marker = tokenizer.convert_ids_to_tokens(lone[:1])[0] if len(lone) == 2 else None
        self.cjk_marker = lone[0] if marker is not None and marker.strip("▁ Ġ") == "" else None

    def ids(self, words: list[str]) -> list[list[int]]:
        keys = [(" " + w if self.space_marked and i else w) for i, w in enumerate(words)]
        new = [k for k in dict.fromkeys(keys) if k not in self.cache]
        if new:
            unk = self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else self.pad_id
            for key, ids in zip(new, self.tokenizer(new, add_special_tokens=False)["input_ids"]):
                if self.cjk_marker is not None and len(ids) > 1 and ids[0] == self.cjk_marker and CJK_START.match(key):
                    ids = ids[1:]
                self.cache[key] = ids or [unk]  # a word of only control characters still gets a position
        return [self.cache[k] for k in keys]

    def length(self, words: list[str]) -> int:
        return len(self.prefix) + len(self.suffix) + sum(len(p) for p in self.ids(words))

    def windows(self, words: list[str], max_length: int):
        """(first word, input ids, position of each word's first sub-word), cut at word boundaries."""
        budget = max(1, max_length - len(self.prefix) - len(self.suffix))
        per_word = [p[:budget] for p in self.ids(words)]  # one over-long word keeps its first pieces
        start = 0
        while True:
            ids, positions = list(self.prefix), []
            end = start
            while end < len(words) and len(ids) - len(self.prefix) + len(per_word[end]) <= budget:
                positions.append(len(ids))
                ids.extend(per_word[end])
                end += 1
            yield start, ids + list(self.suffix), positions
            if end >= len(words):
                return
            start = end


def _examples(sentences: list[Sentence]) -> Examples:
    return Examples([s.words for s in sentences], [s.tags for s in sentences], sentences[0].source if sentences else "",
                    [s.where() for s in sentences])


def _dedupe(sentences: list[Sentence]) -> tuple[list[Sentence], int]:
    seen, keep = set(), []
    for s in sentences:
        key = tuple(s.words)
        if key not in seen:
            seen.add(key)
            keep.append(s)
    return keep, len(sentences) - len(keep)


def _where(ex: Examples, indices: list[int]) -> str:
    return ", ".join(ex.where[i] for i in indices[:3]) + (", ..." if len(indices) > 3 else "")


def looks_tagged(path: Path) -> bool:
    """CoNLL or JSONL tokens (rather than a table of raw texts)?"""
    suffix = path.suffix.lower()
    if suffix in (".conll", ".iob", ".bio"):
        return True
    if not path.is_file() or suffix not in (".txt", ".jsonl", ".json"):
        return False
    head = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[:50] if line.strip()]
    if suffix == ".txt":  # CoNLL: every line "word ... TAG", or -DOCSTART-
        return bool(head) and all(len(l.split()) >= 2 and (TAG.match(l.split()[-1]) or l.startswith("-DOCSTART-"))
                                  for l in head)
    try:
        first = json.loads(head[0]) if head else {}
    except json.JSONDecodeError:
        return False
    return isinstance(first, dict) and ("tokens" in first or "words" in first)


def _read_words(path: Path, encoding: str) -> list[list[str]]:
    """Words of each sentence; tags, when present, are ignored (this is prediction input)."""
    if path.suffix.lower() in (".jsonl", ".json"):
        out = []
        for number, row in json_lines(path, decode_file(path, encoding), '{"tokens": [...]}'):
            words = row.get("tokens", row.get("words"))
            if not isinstance(words, list):
                raise UserError(f"{path} line {number}: expected {{\"tokens\": [...]}}")
            out.append([str(w) for w in words])
        return out
    return [s.words for s in read_tagged_file(path, encoding, need_tags=False)]


register_task(TokenClassification())
