"""zero-shot and few-shot: classify by sentence embeddings (for intents, topics, sentiment with
few or no labelled examples).

Both use the encoder as a sentence embedder (mean-pooled, L2-normalised, as sentence-
transformers models such as MiniLM are trained) under a linear layer: `EmbeddingClassifier`.

- zero-shot: no training. The layer's rows are the embeddings of the label names (or of
  descriptions given in `label_descriptions`), so the logit of a label is the cosine
  similarity of text and label, times a temperature.
- few-shot (the SetFit recipe, Tunstall et al. 2022): stage 1 tunes the encoder contrastively,
  pulling embeddings of same-label texts together and pushing others apart (SetFit's
  CosineSimilarityLoss over the pairs in each batch); stage 2 fits a logistic regression on
  the tuned embeddings as the head. For 4 to 64 examples per class.

The saved model is the encoder's folder plus `embedding_head.safetensors`; its config says
`tunesmith_head: embedding`, and text tasks load it with `EmbeddingClassifier.from_folder`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from typing import Optional

from pydantic import BaseModel, Field

from tunesmith.evaluate.baseline import masked_mean
from tunesmith.methods import MethodDefaults, register_method


class ZeroShotSettings(BaseModel):
    """zero-shot: what each label's embedding is made from."""

    label_descriptions: Optional[dict[str, str]] = Field(
        None, description="zero-shot: a description per label (YAML mapping, or JSON on the command line), "
        "embedded instead of the bare label name.")

HEAD_FILE = "embedding_head.safetensors"
ZERO_SHOT_SCALE = 20.0  # cosine similarities (-1..1) times 20: softmax probabilities that are not all ~equal


class EmbeddingClassifier(torch.nn.Module):
    def __init__(self, body, num_labels: int, config):
        super().__init__()
        self.body = body
        self.classifier = torch.nn.Linear(body.config.hidden_size, num_labels)
        self.config = config  # the classifier's config: labels, and what loads it

    def embed(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        return F.normalize(masked_mean(hidden, attention_mask), dim=-1)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = self.classifier(self.embed(input_ids, attention_mask, token_type_ids))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, folder: str, **_) -> None:
        self.config.tunesmith_head = "embedding"
        self.body.config.update({k: v for k, v in self.config.to_dict().items()
                                 if k in ("id2label", "label2id", "tunesmith_head")})
        self.body.save_pretrained(folder)
        save_file({"weight": self.classifier.weight.detach().contiguous(),
                   "bias": self.classifier.bias.detach().contiguous()}, str(Path(folder) / HEAD_FILE))

    @classmethod
    def from_folder(cls, folder: str) -> "EmbeddingClassifier":
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(folder)
        model = cls(AutoModel.from_pretrained(folder, use_safetensors=True), len(config.id2label), config)
        head = load_file(str(Path(folder) / HEAD_FILE))
        model.classifier.load_state_dict(head)
        return model.eval()


def is_embedding_folder(folder: str) -> bool:
    path = Path(folder) / "config.json"
    return path.is_file() and json.loads(path.read_text()).get("tunesmith_head") == "embedding"


def _wrap(model) -> EmbeddingClassifier:
    """The encoder of a fresh sequence classifier, under an embedding head for its labels."""
    body = getattr(model, model.base_model_prefix)
    return EmbeddingClassifier(body, model.config.num_labels, model.config)


def embed_texts(model: EmbeddingClassifier, features, batch_size: int = 32) -> np.ndarray:
    from tunesmith.data.batching import inference_batches
    from tunesmith.forward import evaluating

    out = np.zeros((len(features), model.classifier.in_features), dtype=np.float32)
    with evaluating(model) as device:
        for indices in inference_batches(features.lengths, batch_size):
            batch = features.batch(indices)
            batch.pop("labels", None)
            out[indices] = model.embed(**{k: v.to(device) for k, v in batch.items()}).cpu().numpy()
    return out


def set_head_from_texts(model: EmbeddingClassifier, tokenizer, texts: list[str]) -> None:
    """Rows of the head = embeddings of one text per label, times the zero-shot temperature."""
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    encoded.pop("token_type_ids", None)
    with torch.inference_mode():
        vectors = model.embed(encoded["input_ids"], encoded["attention_mask"])
    with torch.no_grad():
        model.classifier.weight.copy_(vectors * ZERO_SHOT_SCALE)
        model.classifier.bias.zero_()


class ZeroShot(MethodDefaults):
    name = "zero-shot"
    mean_pooling = False  # it puts its own mean-pooled head on the body (EmbeddingClassifier)
    exportable = False  # EmbeddingClassifier is not traced yet
    settings = (ZeroShotSettings,)
    long_text_modes = ("truncate", "head-tail")  # an embedding per text, not pooled windows
    tasks = ("text-classification",)  # one text, one label (a label's name or description)
    default_lr = 1e-3  # unused: nothing trains
    trains = False
    relative_cost = 0.0

    def apply(self, model, cfg, task):
        from tunesmith import models

        wrapped = _wrap(model)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        described = cfg.label_descriptions or {}
        unknown = sorted(set(described) - set(labels))
        if unknown:
            from tunesmith.errors import UserError

            raise UserError(f"label_descriptions: {', '.join(map(repr, unknown))} are not labels of the data "
                            f"(labels: {', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''})")
        texts = [described.get(label, label.replace("_", " ")) for label in labels]
        set_head_from_texts(wrapped, models.load_tokenizer(cfg.resolved_model()), texts)
        for p in wrapped.parameters():
            p.requires_grad_(False)
        return wrapped

    def export(self, model, folder: Path):
        return model


class FewShot(MethodDefaults):
    name = "few-shot"
    mean_pooling = False  # it puts its own mean-pooled head on the body (EmbeddingClassifier)
    exportable = False  # EmbeddingClassifier is not traced yet
    long_text_modes = ("truncate", "head-tail")  # an embedding per text, not pooled windows
    tasks = ("text-classification",)  # one text, one label (SetFit's setting)
    default_lr = 2e-5  # SetFit's body learning rate
    relative_cost = 2.2  # contrastive pairs through the body, about an adapter's cost
    def apply(self, model, cfg, task):
        wrapped = _wrap(model)
        for p in wrapped.classifier.parameters():
            p.requires_grad_(False)  # stage 2 fits the head; stage 1 trains the encoder only
        return wrapped

    def training_loss(self, model, batch):
        """SetFit's stage 1: for every pair in the batch, (cos(e_i, e_j) - [y_i == y_j])^2."""
        labels = batch["labels"]
        embeddings = model.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        similarity = embeddings @ embeddings.T
        same = (labels[:, None] == labels[None, :]).float()
        pairs = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        return ((similarity - same)[pairs] ** 2).mean(), {}

    def fit_head(self, model, features, targets: list, labels: list[str]) -> None:
        """SetFit's stage 2: a logistic regression on the (tuned) embeddings becomes the head."""
        from sklearn.linear_model import LogisticRegression

        x = embed_texts(model, features)
        y = np.array([labels.index(t) for t in targets])
        classifier = LogisticRegression(max_iter=2000, C=10.0)
        classifier.fit(x, y)
        weight = np.zeros((len(labels), x.shape[1]), dtype=np.float32)
        bias = np.full(len(labels), -1e4, dtype=np.float32)  # a label absent from train is never predicted
        if len(classifier.classes_) == 2:  # sklearn keeps one row for two classes
            coef = np.vstack([-classifier.coef_[0], classifier.coef_[0]]) / 2
            intercept = np.array([-classifier.intercept_[0], classifier.intercept_[0]]) / 2
        else:
            coef, intercept = classifier.coef_, classifier.intercept_
        weight[classifier.classes_] = coef
        bias[classifier.classes_] = intercept
        with torch.no_grad():
            model.classifier.weight.copy_(torch.from_numpy(weight))
            model.classifier.bias.copy_(torch.from_numpy(bias))

    def export(self, model, folder: Path):
        return model


register_method(ZeroShot())
register_method(FewShot())
