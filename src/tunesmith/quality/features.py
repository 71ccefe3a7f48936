"""The features the text checks read: the backbone's mean-pooled last hidden states, the same
ones the untuned baseline's probe reads (evaluate/baseline.py), for every row of every split."""

from __future__ import annotations

import numpy as np

from tunesmith.data.tokens import tokenize, tokenize_pairs


def load_encoder(source: str):
    from transformers import AutoModel

    return AutoModel.from_pretrained(source).eval()


def embed_with(encoder, tokenizer, texts: list, max_length: int, use_cache: bool = True) -> np.ndarray:
    """Mean-pooled features; `use_cache=False` for texts seen once (a served question): no disk."""
    from tunesmith.evaluate.baseline import embed

    if not texts:
        return np.zeros((0, encoder.config.hidden_size), dtype=np.float32)
    if isinstance(texts[0], tuple):  # pairs: both texts, as the model reads them
        ids, _ = tokenize_pairs(tokenizer, [tuple(t) for t in texts], max_length)
    else:
        ids = tokenize(tokenizer, list(texts), max_length, use_cache)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return embed(encoder, ids, pad_id)
