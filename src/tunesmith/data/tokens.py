"""Tokenisation with an on-disk cache: a second run on the same data does not tokenise again.

The cache key covers the tokenizer (class, vocabulary, special tokens), `max_length` and
every text, so any change to them tokenises afresh. Entries are safetensors files (never
pickle), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tunesmith.io import atomic_path


def cache_dir() -> Path:
    root = os.environ.get("TUNESMITH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tunesmith")
    return Path(root) / "tokens"


def tokenizer_fingerprint(tokenizer) -> str:
    # Hashing a 30k-entry vocabulary takes ~0.1 s: done once per tokenizer object.
    cached = getattr(tokenizer, "_tunesmith_fingerprint", None)
    if cached is None:
        vocab = sorted(tokenizer.get_vocab().items())
        meta = [type(tokenizer).__name__, vocab, tokenizer.all_special_tokens, getattr(tokenizer, "do_lower_case", None)]
        cached = hashlib.sha256(json.dumps(meta, default=str).encode()).hexdigest()
        tokenizer._tunesmith_fingerprint = cached
    return cached


def tokenize(tokenizer, texts: list[str], max_length: int, use_cache: bool = True) -> list[list[int]]:
    """Token ids (with special tokens, truncated to `max_length`) for each text."""
    if not use_cache:  # prediction: texts are seen once, so no key, no disk
        return tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    key = hashlib.sha256()
    key.update(tokenizer_fingerprint(tokenizer).encode())
    key.update(str(max_length).encode())
    for text in texts:
        key.update(text.encode("utf-8", errors="surrogatepass"))
        key.update(b"\x00")
    path = cache_dir() / f"{key.hexdigest()}.safetensors"
    if path.is_file():
        stored = load_file(str(path))
        flat, offsets = stored["ids"].tolist(), stored["offsets"].tolist()
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]

    ids = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in ids], out=offsets[1:])
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"ids": torch.from_numpy(flat), "offsets": torch.from_numpy(offsets)}, str(tmp))
    return [list(x) for x in ids]
