"""Relation extraction's head: the states of the two entity markers, side by side.

A relation is between two entities, so the head reads where they are: the last hidden state
at the head's opening marker (`@`) and at the tail's (`#`), concatenated, into a linear layer
(the entity-start pooling of Baldini Soares et al. 2019 and Zhou & Chen 2022). Read from the
[CLS] state instead, a model must first learn which marked entity comes first; a small one
on a few hundred pairs never did (tests/test_relation_extraction.py).

`MarkerPoolClassifier` is `MeanPoolClassifier` with that pooling, saved the same way: the
body as a plain transformers model, the head in `classifier.safetensors`, and in config.json
`"tunesmith_pooling": "markers"` with the two marker token ids (`tunesmith_markers`). Without
tunesmith:

    body = AutoModel.from_pretrained(folder)
    head = safetensors.torch.load_file(f"{folder}/classifier.safetensors")
    hidden = body(**batch).last_hidden_state
    at = [(batch["input_ids"] == marker).int().argmax(1) for marker in body.config.tunesmith_markers]
    pooled = torch.cat([hidden[torch.arange(len(hidden)), i] for i in at], -1)
    logits = (pooled - head["feature_mean"]) / head["feature_scale"] @ head["weight"].T + head["bias"]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunesmith.tasks.mean_pool import HEAD_FILE, MARK, MeanPoolClassifier

MARKERS_KEY = "tunesmith_markers"


def marker_token_ids(tokenizer) -> list[int]:
    """The token ids of the head's and the tail's opening marker, as `relations.mark` spaces
    them: the one piece "a @ b" has that "a b" lacks (the last, where a tokenizer splits it)."""
    base = set(tokenizer("a b", add_special_tokens=False)["input_ids"])
    ids = []
    for symbol in ("@", "#"):
        pieces = [i for i in tokenizer(f"a {symbol} b", add_special_tokens=False)["input_ids"] if i not in base]
        if not pieces:
            raise ValueError(f"the tokenizer has no token for the entity marker {symbol!r}")
        ids.append(pieces[-1])
    return ids


def marker_states(hidden: torch.Tensor, input_ids: torch.Tensor, markers: list[int]) -> torch.Tensor:
    """Each row's states at the first head and first tail marker, concatenated (2 x hidden).
    A row without a marker (cut off by truncation) reads position 0 there."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    found = [(input_ids == marker).int().argmax(1) for marker in markers]
    return torch.cat([hidden[rows, position] for position in found], dim=-1)


class MarkerPoolClassifier(MeanPoolClassifier):
    def __init__(self, body, config):
        super().__init__(body, config)
        width = 2 * config.hidden_size
        self.markers = list(getattr(config, MARKERS_KEY))
        self.classifier = torch.nn.Linear(width, config.num_labels)
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_scale", torch.ones(width))

    def pooled(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None) -> torch.Tensor:
        if input_ids is None:
            raise ValueError("the relation head finds the entity markers in input_ids; give input_ids")
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return marker_states(hidden, input_ids, self.markers)

    pooling = "markers"

    def saved_settings(self) -> dict:
        return {MARK: self.pooling, MARKERS_KEY: self.markers}

    @classmethod
    def build(cls, source: str, labels: list[str], problem_type: str, markers: list[int]) -> "MarkerPoolClassifier":
        """The pretrained body at `source` under a fresh head reading the `markers` token ids."""
        from transformers import AutoModel

        body = AutoModel.from_pretrained(source)
        body.config.update({"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                            "label2id": {label: i for i, label in enumerate(labels)}, "problem_type": problem_type,
                            MARKERS_KEY: markers})
        return cls(body, body.config)


def is_marker_folder(folder: str) -> bool:
    path = Path(folder) / "config.json"
    return path.is_file() and json.loads(path.read_text(encoding="utf-8")).get(MARK) == "markers"
