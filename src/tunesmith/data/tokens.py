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


FORMAT = b"tokens-v2"  # part of every key: a change of the stored layout never reads an old entry


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
    return _cached(tokenizer, max_length, texts, lambda: {
        "ids": tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]})["ids"]


WHOLE = -1  # the max_length part of the cache key of untruncated ids


def cached_ids(tokenizer, texts: list[str], use_cache: bool = True) -> list[list[int]]:
    """Token ids of whole texts, without special tokens or truncation (for --long-text)."""
    def compute() -> dict:
        # verbose=False: no "longer than the maximum sequence length" warning, the point is to cut later
        return {"ids": tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]}

    return _cached(tokenizer, WHOLE, texts, compute)["ids"] if use_cache else compute()["ids"]


def tokenize_pairs(tokenizer, pairs: list[tuple[str, str]], max_length: int,
                   use_cache: bool = True) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token ids and token type ids (segment A / B) of each (first, second) text pair.

    Truncation takes tokens from the longer text first, so a short query keeps all its
    words beside a long passage. Models without segment embeddings get None for types.
    """
    firsts, seconds = [p[0] for p in pairs], [p[1] for p in pairs]

    def compute() -> dict:
        encoded = tokenizer(firsts, seconds, truncation="longest_first", max_length=max_length, add_special_tokens=True)
        types = encoded.get("token_type_ids")
        return {"ids": encoded["input_ids"], **({"types": types} if types is not None else {})}

    if not use_cache:
        out = compute()
    else:
        out = _cached(tokenizer, max_length, [t for p in pairs for t in p] + ["\x01pairs"], compute)
    return out["ids"], out.get("types")


def _cached(tokenizer, max_length: int, texts: list[str], compute) -> dict[str, list[list[int]]]:
    """compute() -> {name: list of id lists}, stored on disk under a key of everything it depends on."""
    key = hashlib.sha256(FORMAT)
    key.update(tokenizer_fingerprint(tokenizer).encode())
    key.update(str(max_length).encode())
    for text in texts:
        key.update(text.encode("utf-8", errors="surrogatepass"))
        key.update(b"\x00")
    path = cache_dir() / f"{key.hexdigest()}.safetensors"
    if path.is_file():
        stored = load_file(str(path))
        names = sorted(k.removesuffix(".flat") for k in stored if k.endswith(".flat"))
        out = {}
        for name in names:
            flat, offsets = stored[f"{name}.flat"].tolist(), stored[f"{name}.offsets"].tolist()
            out[name] = [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        return out

    computed = compute()
    tensors = {}
    for name, lists in computed.items():
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in lists], out=offsets[1:])
        flat = np.fromiter((t for x in lists for t in x), dtype=np.int32, count=int(offsets[-1]))
        tensors[f"{name}.flat"] = torch.from_numpy(flat)
        tensors[f"{name}.offsets"] = torch.from_numpy(offsets)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return {name: [list(x) for x in lists] for name, lists in computed.items()}
