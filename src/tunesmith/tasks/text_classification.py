"""Text classification: one label per text (sentiment, topic, intent)."""

from __future__ import annotations

from pathlib import Path

from tunesmith.data.batching import Features
from tunesmith.data.checks import check_splits
from tunesmith.data.labeled import LABEL_COLUMNS, TEXT_COLUMNS, Examples, pick_column, to_examples
from tunesmith.data.sources import read_source
from tunesmith.data.splits import Splits, load_splits
from tunesmith.data.tokens import tokenize
from tunesmith.errors import UserError
from tunesmith.evaluate.baseline import linear_probe
from tunesmith.evaluate.metrics import HIGHER_IS_BETTER, classification_metrics
from tunesmith.inference import INFERENCE_BATCH, predict_probs, write_predictions
from tunesmith.tasks import register_task


class TextClassification:
    name = "text-classification"
    peft_task_type = "SEQ_CLS"
    metrics_higher_is_better = HIGHER_IS_BETTER
    has_baseline = True  # a linear probe on frozen features
    default_metric = "macro_f1"

    def load_data(self, cfg) -> Splits:
        return load_splits(
            cfg.data, cfg.val_data, cfg.test_data, cfg.text_col, cfg.label_col, cfg.encoding,
            cfg.val_fraction, cfg.test_fraction, cfg.seed, cfg.max_train_samples, cfg.max_eval_samples,
        )

    def read_labeled(self, source: str, cfg: dict, labels: list[str], text_col=None, label_col=None,
                     encoding: str = "utf-8") -> Examples:
        tables = read_source(source, encoding)
        table = tables.get("all") or tables.get("test")  # a file, or a dataset's test split
        if table is None:
            raise UserError(f"{source}: no test split found")
        text_col = pick_column(table, text_col or cfg.get("text_col"), TEXT_COLUMNS, "text", "--text-col")
        label_col = pick_column(table, label_col or cfg.get("label_col"), LABEL_COLUMNS, "labels", "--label-col")
        examples = to_examples(table, text_col, label_col)
        unseen = sorted(set(examples.labels) - set(labels))
        if unseen:
            raise UserError(f"{source}: labels the run was not trained on: {', '.join(map(repr, unseen[:5]))}")
        return examples

    def check(self, splits: Splits, tokenizer, max_length: int):
        return check_splits(splits, tokenizer, max_length)

    def build_model(self, source: str, labels: list[str]):
        from transformers import AutoModelForSequenceClassification

        try:
            return AutoModelForSequenceClassification.from_pretrained(
                source,
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)},
            )
        except OSError as exc:
            raise UserError(f"--model {source}: cannot load weights ({str(exc).splitlines()[0]})") from None

    def load_model(self, folder: str):
        from transformers import AutoModelForSequenceClassification

        # use_safetensors: a run folder may come from someone else; never unpickle it.
        return AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)

    def encode(self, tokenizer, inputs, targets, labels, max_length, use_cache=True) -> Features:
        ids = tokenize(tokenizer, inputs, max_length, use_cache=use_cache)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if targets is None:
            return Features([{"input_ids": x} for x in ids], pad_id)
        class_id = {label: i for i, label in enumerate(labels)}
        return Features([{"input_ids": x, "labels": class_id[t]} for x, t in zip(ids, targets)], pad_id)

    def predict(self, model, features: Features, batch_size: int = INFERENCE_BATCH):
        return predict_probs(model, [row["input_ids"] for row in features.rows], features.pad_id, batch_size)

    def metrics(self, targets, outputs, labels) -> dict:
        class_id = {label: i for i, label in enumerate(labels)}
        return classification_metrics([class_id[t] for t in targets], outputs, labels)

    def summary(self, metrics: dict) -> str:
        return f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"

    def baseline(self, model, train: Features, test: Features, train_targets, test_targets, labels, seed):
        encoder = getattr(model, model.base_model_prefix)
        class_id = {label: i for i, label in enumerate(labels)}
        return linear_probe(encoder, [r["input_ids"] for r in train.rows], [class_id[t] for t in train_targets],
                            [r["input_ids"] for r in test.rows], [class_id[t] for t in test_targets],
                            labels, train.pad_id, classification_metrics, seed)

    def read_inputs(self, path: str, encoding: str, text_col: str | None):
        table = read_source(path, encoding).get("all")
        if table is None:
            raise UserError(f"{path}: give a CSV, TSV, JSONL, Parquet or text file")
        column = pick_column(table, text_col, TEXT_COLUMNS, "text", "--text-col")
        return table.frame.to_dict("records"), table.frame[column].tolist()

    def write_predictions(self, path: Path, rows, outputs, labels) -> None:
        write_predictions(path, rows, outputs, labels)


register_task(TextClassification())
