"""A sequence head that reads what a sentence-embedding backbone was trained to produce.

Sentence-embedding models (all-MiniLM-L6-v2 and the other sentence-transformers models, e5,
...) are trained so that the *mean* of their last hidden states over the real tokens carries
the sentence's meaning. Their [CLS] vector, and BERT's pooler (dense + tanh on [CLS]), were
never trained for it, yet transformers' `AutoModelForSequenceClassification` reads exactly
that. On 4,000 tweets, one epoch of the default `lora` through that head scored 0.617 test
macro-F1 against the linear probe's 0.690, and 0.709 through this one (docs/benchmarks.md).
`MeanPoolClassifier` is the backbone under a linear head on the masked mean.

Which pooling a backbone was trained with is read from the backbone itself: the
sentence-transformers `modules.json` + `1_Pooling/config.json` in its folder
(`trained_pooling`). Models without them keep transformers' own classifier.

A run folder holds the body as a plain transformers model (config.json + model.safetensors,
loadable with `AutoModel`) and the head in `classifier.safetensors`; config.json says
`"tunesmith_pooling": "mean"`. The head standardises the pooled vector first (a mean and
scale per feature, fixed buffers: the linear probe's scaler when the head starts from it), so
its weights stay O(1) for the optimiser and dropout perturbs centred features. Without
tunesmith:

    body = AutoModel.from_pretrained(folder)
    head = safetensors.torch.load_file(f"{folder}/classifier.safetensors")
    hidden = body(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    logits = (pooled - head["feature_mean"]) / head["feature_scale"] @ head["weight"].T + head["bias"]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tunesmith.evaluate.baseline import masked_mean

HEAD_FILE = "classifier.safetensors"
MARK = "tunesmith_pooling"  # the config.json key that says a folder holds a MeanPoolClassifier


class MeanPoolClassifier(torch.nn.Module):
    base_model_prefix = "body"  # what freeze keeps fixed and LoRA adapts, as in transformers' models

    def __init__(self, body, config):
        super().__init__()
        self.body = body
        self.config = config  # labels, problem_type, and the body's own settings
        self.dropout = torch.nn.Dropout(getattr(config, "hidden_dropout_prob", None) or 0.1)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.register_buffer("feature_mean", torch.zeros(config.hidden_size))
        self.register_buffer("feature_scale", torch.ones(config.hidden_size))

    def pooled(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None) -> torch.Tensor:
        """The mean of the last hidden states over the tokens the mask keeps."""
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                           **extra).last_hidden_state
        return hidden.mean(1) if attention_mask is None else masked_mean(hidden, attention_mask)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, inputs_embeds=None,
                **_):
        from transformers.modeling_outputs import SequenceClassifierOutput

        pooled = self.pooled(input_ids, attention_mask, token_type_ids, inputs_embeds)
        logits = self.classifier(self.dropout((pooled - self.feature_mean) / self.feature_scale))
        return SequenceClassifierOutput(loss=None if labels is None else self._loss(logits, labels), logits=logits)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss transformers' sequence classifiers compute for the same problem_type."""
        kind = self.config.problem_type
        if kind == "regression":
            return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).squeeze(-1))
        if kind == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return F.cross_entropy(logits, labels)

    # What training asks of a transformers model, answered by the body.
    def get_input_embeddings(self):
        return self.body.get_input_embeddings()

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.body.gradient_checkpointing_enable(**kwargs)

    pooling = "mean"  # what config.json's MARK says this head reads

    def saved_settings(self) -> dict:
        """What config.json keeps beside the labels so that `from_folder` rebuilds this head."""
        return {MARK: self.pooling}

    def save_pretrained(self, folder: str, **_) -> None:
        self.body.config.update({key: getattr(self.config, key) for key in ("id2label", "label2id", "problem_type")})
        self.body.config.update(self.saved_settings())
        self.body.save_pretrained(folder)
        save_file({name: tensor.detach().contiguous() for name, tensor in self.head_state().items()},
                  str(Path(folder) / HEAD_FILE))

    def head_state(self) -> dict[str, torch.Tensor]:
        return {"weight": self.classifier.weight, "bias": self.classifier.bias,
                "feature_mean": self.feature_mean, "feature_scale": self.feature_scale}

    def load_head(self, state: dict[str, torch.Tensor]) -> None:
        """Set the head from `head_state()`-named tensors (a saved head, or the probe's)."""
        with torch.no_grad():
            for name, tensor in self.head_state().items():
                tensor.copy_(torch.as_tensor(state[name], dtype=tensor.dtype))

    def load_probe(self, scaler, weight, bias) -> None:
        """Start the head as a probe fitted on standardised features (evaluate/baseline.py):
        its scaler becomes the standardising buffers, its weights the classifier."""
        self.load_head({"weight": weight, "bias": bias, "feature_mean": scaler.mean_, "feature_scale": scaler.scale_})

    @classmethod
    def build(cls, source: str, labels: list[str], problem_type: str) -> "MeanPoolClassifier":
        """The pretrained body at `source` under a fresh head for `labels`."""
        from transformers import AutoModel

        body = AutoModel.from_pretrained(source)
        config = body.config
        config.update({"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                       "label2id": {label: i for i, label in enumerate(labels)}, "problem_type": problem_type})
        return cls(body, config)

    @classmethod
    def from_folder(cls, folder: str) -> "MeanPoolClassifier":
        from transformers import AutoModel

        body = AutoModel.from_pretrained(folder, use_safetensors=True)  # a run folder is never unpickled
        model = cls(body, body.config)
        model.load_head(load_file(str(Path(folder) / HEAD_FILE)))
        return model.eval()


def is_mean_pool_folder(folder: str) -> bool:
    path = Path(folder) / "config.json"
    return path.is_file() and json.loads(path.read_text(encoding="utf-8")).get(MARK) == "mean"


def trained_pooling(source: str) -> str:
    """"mean" when the backbone at `source` was trained as a mean-pooled sentence embedder (its
    sentence-transformers pooling config says so), else "cls" (transformers' own head)."""
    try:
        modules = json.loads(_file(source, "modules.json").read_text(encoding="utf-8"))
        pooling = next(m for m in modules if m.get("type", "").endswith("Pooling"))
        config = json.loads(_file(source, f"{pooling['path']}/config.json").read_text(encoding="utf-8"))
    except Exception:  # no sentence-transformers config (or offline): the model's own [CLS] head
        return "cls"
    return "mean" if config.get("pooling_mode_mean_tokens") else "cls"


def _file(source: str, name: str) -> Path:
    """A file of a model folder, or of a Hub model (downloaded, for users who are online)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder / name
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(source, name))
