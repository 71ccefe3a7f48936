"""Relation extraction: the relation a sentence states between a head and a tail entity.

An example is one entity pair of one sentence, read by the model as the sentence with both
entities marked (data/relations.py), so this is sequence classification over marked texts:
the data checks, methods, export and serving of text classification apply, with a head that
reads the states at the two entity markers (tasks/marker_pool.py). Splits are cut by
sentence, never by pair. Metrics follow TACRED: micro precision, recall and F1 over
the pairs that hold a relation (predicting `no_relation` for them is a miss, predicting a
relation for a no_relation pair a false alarm), and macro-F1 over the relations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunesmith.data import relations
from tunesmith.data.labeled import Examples
from tunesmith.data.split import sample_splits, stratified_indices
from tunesmith.data.splits import Splits
from tunesmith.data.targets import ClassTarget
from tunesmith.errors import UserError
from tunesmith.evaluate.baseline import fit_probe, linear_probe, probe_as_linear_layer
from tunesmith.evaluate.metrics import HIGHER_IS_BETTER
from tunesmith.tasks import register_task
from tunesmith.tasks.marker_pool import MarkerPoolClassifier, is_marker_folder, marker_states, marker_token_ids
from tunesmith.tasks.sequence import SequenceTask
from tunesmith.tasks.text_classification import ClassifierHead


class RelationHead(ClassifierHead):
    default_metric = "micro_f1"
    baseline_name = "a linear probe on the untuned entity markers' states"
    metrics_higher_is_better = {**HIGHER_IS_BETTER, "micro_f1": True, "precision": True, "recall": True}
    # Pairs of one sentence are near-duplicates of each other by construction: that check
    # would flag every sentence with more than one pair.
    quality_checks = ("label-errors", "outliers", "text")

    def metrics(self, targets, probs, labels) -> dict:
        scores = super().metrics(targets, probs, labels)
        class_id = {label: i for i, label in enumerate(labels)}
        return scores | relation_scores(np.array([class_id[t] for t in targets]), np.asarray(probs).argmax(axis=1),
                                        labels)

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        """The linear probe on the untuned entity markers' states (what the head reads)."""
        class_id = {label: i for i, label in enumerate(labels)}
        return linear_probe(model.body, [r["input_ids"] for r in train.rows], [class_id[t] for t in train_targets],
                            [r["input_ids"] for r in test.rows], [class_id[t] for t in test_targets], labels,
                            train.pad_id, lambda ids, probs, names: self.metrics([names[i] for i in ids], probs, names),
                            seed, pool=MarkerPool(model.markers))

    def start_head(self, model, train, train_targets, labels, seed) -> str:
        """The head starts as the probe on the markers' states, as a mean-pooled head starts as
        the probe on the mean (text_classification.ClassifierHead.start_head)."""
        class_id = {label: i for i, label in enumerate(labels)}
        scaler, probe = fit_probe(model.body, [r["input_ids"] for r in train.rows], [class_id[t] for t in train_targets],
                                  train.pad_id, seed, pool=MarkerPool(model.markers))
        model.load_probe(scaler, *probe_as_linear_layer(probe, len(labels)))
        return "head: starts as the linear probe on the entity markers' states"

    def summary(self, metrics: dict) -> str:
        return (f"micro-F1 {metrics['micro_f1']:.4f} (precision {metrics['precision']:.4f}, recall "
                f"{metrics['recall']:.4f}; no_relation left out), macro-F1 {metrics['macro_f1']:.4f}")


class MarkerPool:
    """The probe's features: the markers' states (a class, so the probe's memo can name it)."""

    def __init__(self, markers: list[int]):
        self.markers = list(markers)

    def __call__(self, hidden, batch):
        return marker_states(hidden, batch["input_ids"], self.markers)

    def __repr__(self) -> str:
        return f"MarkerPool({self.markers})"


def relation_scores(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict:
    """TACRED's micro P/R/F1 over the relations, and macro-F1 over the relations that occur;
    the labels read as "no relation" (relations.NEGATIVE_LABELS) count as no answer."""
    negatives = [i for i, label in enumerate(labels) if relations.negative(label)]
    said = ~np.isin(predicted, negatives)
    held = ~np.isin(truth, negatives)
    correct = int((said & held & (predicted == truth)).sum())
    precision = correct / max(int(said.sum()), 1)
    recall = correct / max(int(held.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_relation = []
    for i in sorted((set(truth.tolist()) | set(predicted.tolist())) - set(negatives)):
        hits = int(((predicted == i) & (truth == i)).sum())
        p, r = hits / max(int((predicted == i).sum()), 1), hits / max(int((truth == i).sum()), 1)
        per_relation.append(2 * p * r / (p + r) if p + r else 0.0)
    return {"micro_f1": f1, "precision": precision, "recall": recall,
            "macro_f1": float(np.mean(per_relation)) if per_relation else 0.0}


class RelationExtraction(SequenceTask):
    input_kind = "relation"
    # The head reads the states at the entity markers, found in input_ids: prompt methods feed
    # embeddings with learned tokens in front instead, so they cannot tune it.
    head_needs_input_ids = True

    def __init__(self):
        super().__init__("relation-extraction", ClassTarget(), RelationHead(), pairs=False)
        # Marking needs the whole pair in view: chunks or a head-and-tail cut could drop a marker.
        self.long_text_modes = ("truncate",)

    # ---- model --------------------------------------------------------------------------
    def build_model(self, source: str, labels: list[str], pooling: str = "cls"):
        """The body under the marker head, whatever pooling the backbone was trained with."""
        from tunesmith import models

        try:
            markers = marker_token_ids(models.load_tokenizer(source))
        except ValueError as exc:
            raise UserError(f"--model {source}: {exc}; choose a model whose tokenizer reads '@' and '#'") from None
        return MarkerPoolClassifier.build(source, labels, self.problem_type, markers)

    def load_model(self, folder: str):
        if not is_marker_folder(folder):
            raise UserError(f"{folder}: not a relation-extraction model (config.json has no entity-marker head)")
        return MarkerPoolClassifier.from_folder(folder)

    # ---- data ---------------------------------------------------------------------------
    def load_data(self, cfg) -> Splits:
        if not cfg.data:
            raise UserError("no training data: pass --data FILE (JSONL of text, head, tail, relation; DuIE; "
                            "SemEval) or a folder")
        parts = relations.read_source(cfg.data, cfg.encoding)
        train = parts.get("train", parts.get("all"))
        val = relations.read_file(Path(cfg.val_data), cfg.encoding) if cfg.val_data else parts.get("val")
        test = relations.read_file(Path(cfg.test_data), cfg.encoding) if cfg.test_data else parts.get("test")
        notes = []
        if val is None or test is None:
            train, val, test = _carve_sentences(train, val, test, cfg, notes)
        examples = [pair_examples(group, cfg.data) for group in (train, val, test)]
        labels = ClassTarget().names(examples[0].labels, str(cfg.data), "relation")
        for name, split in (("validation", examples[1]), ("test", examples[2])):
            unseen = sorted(set(split.labels) - set(labels))
            if unseen:
                raise UserError(f"{split.source}: {name} relations never seen in training: "
                                f"{', '.join(map(repr, unseen[:5]))}; add training pairs for them or remove those rows")
        sampled = sample_splits(examples, cfg, "entity pairs", notes)
        negatives = sum(relations.negative(label) for label in sampled[0].labels)
        notes.append(f"{len(sampled[0])} training pairs, {negatives} of them without a relation")
        return Splits(*sampled, labels, "text", "relation", notes)

    def check(self, splits: Splits, tokenizer, max_length: int):
        """Text classification's checks on the marked texts, and whether entity types are given
        for all pairs or none: the model reads typed and untyped markers differently."""
        report = super().check(splits, tokenizer, max_length)
        typed = [relations.typed(text) for text in splits.train.texts]
        report.facts["typed_pairs"] = sum(typed)
        if 0 < sum(typed) < len(typed):
            untyped = [where for where, has in zip(splits.train.where, typed) if not has]
            report.warnings.append(f"{len(untyped)} of {len(typed)} training pairs have no entity types "
                                   f"({', '.join(untyped[:3])}); give types for every pair or for none")
        return report

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8") -> Examples:
        parts = relations.read_source(source, encoding)
        examples = pair_examples(parts.get("test", parts.get("all")), source)
        unseen = sorted(set(examples.labels) - set(labels))
        if unseen:
            raise UserError(f"{source}: relations the run was not trained on: {', '.join(map(repr, unseen[:5]))}")
        return examples

    # ---- `predict` on a file ------------------------------------------------------------------
    def read_inputs(self, path: str, encoding: str, text_col: str | None, text_pair_col: str | None = None):
        """One row per entity pair (a DuIE row gives every ordered pair of its entities)."""
        sentences = relations.read_source(path, encoding, need_labels=False).get("all")
        if sentences is None:
            raise UserError(f"{path}: give a file of relations, not a folder")
        rows, inputs = [], []
        for sentence in sentences:
            for pair in sentence.pairs:
                rows.append({"text": sentence.text, "head": _span(sentence.text, pair.head),
                             "tail": _span(sentence.text, pair.tail)})
                inputs.append(relations.mark(sentence.text, pair.head, pair.tail))
        return rows, inputs

    # ---- serving ------------------------------------------------------------------------------
    def serve_input(self, value, pairs: bool):
        if not isinstance(value, dict) or not {"text", "head", "tail"} <= set(value):
            raise ValueError('this model reads entity pairs: give {"text": ..., "head": ..., "tail": ...}')
        text = value["text"]
        try:
            head = relations.entity(text, value["head"], None, "head")
            tail = relations.entity(text, value["tail"], None, "tail")
            head, tail = relations.separate(text, head, tail, "the entities")
        except UserError as exc:
            raise ValueError(str(exc)) from None
        return relations.mark(text, head, tail)

    def sample_input(self, text: str, pairs: bool) -> dict:
        return {"text": text, "head": {"start": 0, "end": 1}, "tail": {"start": len(text) - 1, "end": len(text)}}

    def card_usage(self) -> list[str]:
        return ["The model reads a sentence with its head and tail entity marked, typed where training had "
                "types: `@ * type * head @` and `# ^ type ^ tail #`, e.g. `@ * person * Ada @ wrote the "
                "# ^ book ^ Notes # .` (an `@` or `#` of the text itself written full-width). The head reads "
                "the last hidden states at the first `@` and the first `#` token (their ids are "
                "`tunesmith_markers` in config.json), concatenated:", "", "```python",
                "import torch", "from safetensors.torch import load_file", "",
                'head = load_file("path/to/model/classifier.safetensors")',
                'batch = tokenizer(marked_texts, return_tensors="pt", padding=True)',
                "hidden = model(**batch).last_hidden_state",
                'at = [(batch["input_ids"] == m).int().argmax(1) for m in model.config.tunesmith_markers]',
                "pooled = torch.cat([hidden[torch.arange(len(hidden)), i] for i in at], -1)",
                'logits = (pooled - head["feature_mean"]) / head["feature_scale"] @ head["weight"].T + head["bias"]',
                "relation = model.config.id2label[int(logits.argmax(-1)[0])]", "```"]


def pair_examples(sentences: list[relations.Sentence], source) -> Examples:
    """One example per entity pair: the marked sentence and the relation."""
    texts, labels, where = [], [], []
    for sentence in sentences:
        for pair in sentence.pairs:
            texts.append(relations.mark(sentence.text, pair.head, pair.tail))
            labels.append(pair.relation)
            where.append(pair.where)
    return Examples(texts, labels, str(source), where)


def _carve_sentences(train, val, test, cfg, notes: list[str]):
    """Validation and test carved from training by sentence (exact repeats of a sentence
    merged first), stratified by each sentence's first relation."""
    merged: dict[str, relations.Sentence] = {}
    for sentence in train:
        merged.setdefault(sentence.text, relations.Sentence(sentence.text)).add(sentence.pairs)
    if len(merged) < len(train):
        notes.append(f"merged {len(train) - len(merged)} repeated sentences before splitting")
    sentences = list(merged.values())
    missing = [name for name, split in (("val", val), ("test", test)) if split is None]
    strata = [next((p.relation for p in s.pairs if not relations.negative(p.relation)), relations.NO_RELATION)
              for s in sentences]
    fractions = [cfg.val_fraction if name == "val" else cfg.test_fraction for name in missing]
    groups = stratified_indices(strata, fractions, cfg.seed)
    carved = {name: [sentences[i] for i in groups[k]] for k, name in enumerate(missing)}
    train = [sentences[i] for i in groups[-1]]
    val, test = carved.get("val", val), carved.get("test", test)
    notes.append(f"split {cfg.data} by sentence: train {len(train)}/val {len(val)}/test {len(test)} sentences "
                 f"(seed {cfg.seed})")
    return train, val, test


def _span(text: str, entity: relations.Entity) -> dict:
    return {"text": text[entity.start:entity.end], "start": entity.start, "end": entity.end,
            **({"type": entity.type} if entity.type else {})}


register_task(RelationExtraction())
