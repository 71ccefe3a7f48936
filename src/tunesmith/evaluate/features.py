"""Mean-pooled features of texts: the backbone's last hidden states averaged over real tokens,
the same ones the untuned baseline's probe reads (baseline.py). The data-quality checks, the
ranking metric and the assistant's retriever read them too."""

from __future__ import annotations

import numpy as np

from tunesmith.data.tokens import tokenize, tokenize_pairs
from tunesmith.evaluate.baseline import embed


def load_encoder(source: str):
    from transformers import AutoModel

    return AutoModel.from_pretrained(source, use_safetensors=True).eval()


def embed_with(encoder, tokenizer, texts: list, max_length: int, use_cache: bool = True) -> np.ndarray:
    """Mean-pooled features; `use_cache=False` for texts seen once (a served question): no disk."""
    if not texts:
        return np.zeros((0, encoder.config.hidden_size), dtype=np.float32)
    if isinstance(texts[0], tuple):  # pairs: both texts, as the model reads them
        ids, _ = tokenize_pairs(tokenizer, [tuple(t) for t in texts], max_length)
    else:
        ids = tokenize(tokenizer, list(texts), max_length, use_cache)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return embed(encoder, ids, pad_id)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity = inner product); zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
