"""One text or a text pair in, one output per example: the shared body of the sequence tasks.

Text classification, pair classification, regression and multi-label classification
differ only in what a label cell holds (a target kind, data/targets.py) and in their head:
how targets become tensors, how logits become outputs, metrics and written predictions.
`SequenceTask` composes the two; each task module registers one with its own head.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.data.batching import Features
from tunesmith.data.checks import check_splits
from tunesmith.data.long_text import MODES, TRUNCATE, LongText, encode_long
from tunesmith.data.labeled import LABEL_COLUMNS, PAIR_FIRST_COLUMNS, TEXT_COLUMNS, Examples, pick_column, to_examples
from tunesmith.data.sources import read_source
from tunesmith.data.splits import Splits, pair_column, load_splits
from tunesmith.data.tokens import tokenize, tokenize_pairs
from tunesmith.errors import UserError
from tunesmith.forward import INFERENCE_BATCH, predict_logits
from tunesmith.tasks import TaskDefaults


class SequenceTask(TaskDefaults):
    peft_task_type = "SEQ_CLS"
    default_model = "minilm"
    exportable = True  # token ids in, one row of logits out
    quantisable = True
    mean_pooling = True  # build_model(pooling="mean"): a head on the mean-pooled states

    def __init__(self, name: str, target, head, pairs: bool | None):
        self.name = name
        self.target = target  # parses label cells: ClassTarget, NumberTarget, LabelSetTarget
        self.head = head  # targets -> tensors, logits -> outputs, metrics, written predictions
        self.pairs = pairs  # True: two texts per example; None: two when a second column is given or found
        self.metrics_higher_is_better = head.metrics_higher_is_better
        self.default_metric = head.default_metric
        self.has_baseline, self.baseline_name = head.has_baseline, head.baseline_name
        self.quality_checks = head.quality_checks
        self.start_head = head.start_head
        self.problem_type = head.problem_type
        self.class_probabilities = head.problem_type == "single_label_classification"
        # LoRA's rate falling with the run's length was measured on single-label classification
        # (banking77, SST-2, ChnSentiCorp); regression and multi-label keep the method's one rate.
        self.lr_by_steps = self.class_probabilities
        self.answer = head.answer
        self.ensemble = head.ensemble
        # Texts longer than the model: pairs are cut from the longer text (truncate only).
        self.long_text_modes = ("truncate",) if pairs else MODES
        # --long-text chunk: a label present in any window is present in the text (max);
        # one label or a number is the windows' consensus (mean).
        self.window_pool = "max" if head.problem_type == "multi_label_classification" else "mean"

    # ---- data ---------------------------------------------------------------------------
    def load_data(self, cfg) -> Splits:
        return load_splits(cfg, target=self.target, pairs=self.pairs)

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8") -> Examples:
        tables = read_source(source, encoding)
        table = tables.get("all") or tables.get("test")  # a file, or a dataset's test split
        if table is None:
            raise UserError(f"{source}: no test split found")
        first, second = self._text_columns(table, text_col or cfg.text_col, cfg.text_pair_col)
        label_col = pick_column(table, label_col or cfg.label_col, LABEL_COLUMNS, "labels", "--label-col")
        target = self.target.with_separator(cfg.label_sep) if cfg.label_sep else self.target
        examples = to_examples(table, first, label_col, target, second)
        unseen = self.target.unseen(examples.labels, labels)
        if unseen:
            raise UserError(f"{source}: labels the run was not trained on: {', '.join(map(repr, unseen[:5]))}")
        return examples

    def check(self, splits: Splits, tokenizer, max_length: int):
        return check_splits(splits, tokenizer, max_length, self.head.count_labels)

    # ---- model --------------------------------------------------------------------------
    def build_model(self, source: str, labels: list[str], pooling: str = "cls"):
        from transformers import AutoModelForSequenceClassification

        from tunesmith.models import with_new_head
        from tunesmith.tasks.mean_pool import MeanPoolClassifier

        if pooling == "mean":  # a sentence-embedding backbone: the head reads what it was trained to give
            return MeanPoolClassifier.build(source, labels, self.head.problem_type)
        return with_new_head(AutoModelForSequenceClassification, source, labels, problem_type=self.head.problem_type)

    def load_model(self, folder: str):
        from transformers import AutoModelForSequenceClassification

        from tunesmith.methods.embedding import EmbeddingClassifier, is_embedding_folder
        from tunesmith.tasks.mean_pool import MeanPoolClassifier, is_mean_pool_folder

        if is_embedding_folder(folder):  # a zero-shot or few-shot run
            return EmbeddingClassifier.from_folder(folder)
        if is_mean_pool_folder(folder):
            return MeanPoolClassifier.from_folder(folder)

        # use_safetensors: a run folder may come from someone else; never unpickle it.
        return AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)

    # ---- features, outputs, metrics ---------------------------------------------------------
    def load_processor(self, source: str, cfg=None):
        from tunesmith import models

        return models.load_tokenizer(source)

    def encode(self, tokenizer, inputs, targets, labels, max_length, use_cache=True, augment=False,
               long_text: LongText | None = None) -> Features:
        long_text = long_text or TRUNCATE
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        pairs = bool(inputs) and isinstance(inputs[0], (tuple, list))
        if long_text.mode != "truncate":
            if pairs:
                raise UserError(f"--long-text {long_text.mode}: reads single texts; text pairs are cut from the "
                                "longer text (use --long-text truncate)")
            features = encode_long(tokenizer, list(inputs), max_length, long_text, pad_id, self.window_pool, use_cache)
        elif pairs:
            ids, types = tokenize_pairs(tokenizer, [tuple(x) for x in inputs], max_length, use_cache=use_cache)
            features = Features([{"input_ids": i, "token_type_ids": t} for i, t in zip(ids, types)] if types else
                                [{"input_ids": i} for i in ids], pad_id)
        else:
            features = Features([{"input_ids": i} for i in tokenize(tokenizer, list(inputs), max_length,
                                                                    use_cache=use_cache)], pad_id)
        if targets is not None:
            for row, value in zip(features.rows, targets):
                row["labels"] = self.head.target_value(value, labels)
        return features

    def predict(self, model, features: Features, batch_size: int = INFERENCE_BATCH):
        return self.head.outputs(predict_logits(model, features, batch_size), model)

    def metrics(self, targets, outputs, labels) -> dict:
        return self.head.metrics(targets, outputs, labels)

    def summary(self, metrics: dict) -> str:
        return self.head.summary(metrics)

    def tune_on_validation(self, model, features: Features, targets, labels) -> dict:
        return self.head.tune(model, self.predict(model, features), targets, labels)

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed):
        return self.head.baseline(model, train, test, train_targets, test_targets, labels, seed)

    # ---- `predict` on a file ------------------------------------------------------------------
    def read_inputs(self, path: str, encoding: str, text_col: str | None, text_pair_col: str | None = None):
        table = read_source(path, encoding).get("all")
        if table is None:
            raise UserError(f"{path}: give a CSV, TSV, JSONL, Parquet or text file")
        first, second = self._text_columns(table, text_col, text_pair_col)
        texts = table.frame[first].tolist()
        inputs = list(zip(texts, table.frame[second].tolist())) if second else texts
        return table.frame.to_dict("records"), inputs

    def write_predictions(self, path: Path, rows, outputs, labels) -> None:
        self.head.write_predictions(path, rows, outputs, labels)

    # ---- serving: one JSON value in, one JSON object out -----------------------------------
    def serve_input(self, value, pairs: bool):
        if pairs:
            if not isinstance(value, dict) or not {"text", "text_pair"} <= set(value):
                raise ValueError('this model reads text pairs: give {"text": ..., "text_pair": ...}')
            return (value["text"], value["text_pair"])
        if not isinstance(value, str):
            raise ValueError("give a text (a string)")
        return value

    def output_rows(self, outputs) -> list:
        return self.head.output_rows(outputs)

    def serve_output(self, value, row, labels: list[str], top_k: int | None) -> dict:
        return self.head.serve_output(row, labels, top_k)

    def _text_columns(self, table, text_col, pair_col) -> tuple[str, str | None]:
        # A finished run records its second column (text_pair_col) when it used pairs, so
        # eval and predict follow the run rather than guessing from the new file.
        second = pair_column(table, pair_col, bool(pair_col or self.pairs))
        first = pick_column(table, text_col, PAIR_FIRST_COLUMNS if second else TEXT_COLUMNS, "text", "--text-col")
        return first, second

