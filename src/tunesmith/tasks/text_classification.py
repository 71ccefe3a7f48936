"""Text classification: one label per text (sentiment, topic, intent)."""

from __future__ import annotations

from tunesmith.data.splits import Splits, load_splits
from tunesmith.errors import UserError
from tunesmith.evaluate.metrics import classification_metrics
from tunesmith.tasks import register_task


class TextClassification:
    name = "text-classification"

    def load_data(self, cfg) -> Splits:
        return load_splits(
            cfg.data, cfg.val_data, cfg.test_data, cfg.text_col, cfg.label_col, cfg.encoding,
            cfg.val_fraction, cfg.test_fraction, cfg.seed, cfg.max_train_samples, cfg.max_eval_samples,
        )

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

    def metrics(self, y_true, probs, labels):
        return classification_metrics(y_true, probs, labels)


register_task(TextClassification())
