"""The retrieval bi-encoder: one encoder reads questions and answers alike (mean-pooled,
unit-length vectors, as sentence-embedding models are trained), fine-tuned on the knowledge
base's own pairs with in-batch negatives (each question's answer against the batch's other
answers: the MultipleNegativesRanking loss of sentence-transformers, here in both directions).
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

SCALE = 20.0  # cosine similarities times this are the logits (sentence-transformers' default)


class BiEncoder:
    def __init__(self, source: str, max_length: int = 128):
        from transformers import AutoModel

        from tunesmith import models

        self.model = AutoModel.from_pretrained(source, use_safetensors=True)  # never unpickle a folder
        self.tokenizer = models.load_tokenizer(source)
        self.max_length = max_length

    def _pooled(self, texts: list[str]) -> torch.Tensor:
        from tunesmith.evaluate.baseline import masked_mean

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch.pop("token_type_ids", None)
        return F.normalize(masked_mean(self.model(**batch).last_hidden_state, batch["attention_mask"]), dim=-1)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, in the order of `texts` (the baseline's mean-pooled embedding, normalised)."""
        from tunesmith.evaluate.features import embed_with
        from tunesmith.evaluate.features import normalise

        return normalise(embed_with(self.model, self.tokenizer, list(texts), self.max_length, use_cache=False))

    def fine_tune(self, pairs: list[tuple[str, str]], epochs: int = 1, lr: float = 2e-5, batch_size: int = 32,
                  seed: int = 0, log=print) -> list[float]:
        """In-batch negatives over (question, answer) pairs; returns the loss of each step.
        Pairs with the same answer would be false negatives of each other, so a batch holds
        each answer at most once."""
        from transformers import get_linear_schedule_with_warmup

        torch.manual_seed(seed)
        rng = random.Random(seed)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)
        batches_per_epoch = max(1, len(pairs) // batch_size)
        total = batches_per_epoch * epochs
        schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
        losses: list[float] = []
        self.model.train()
        for epoch in range(epochs):
            for batch in _batches(pairs, batch_size, rng):
                questions, answers = self._pooled([q for q, _ in batch]), self._pooled([a for _, a in batch])
                logits = SCALE * questions @ answers.T
                target = torch.arange(len(batch))
                loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                losses.append(loss.item())
            log(f"bi-encoder epoch {epoch + 1}/{epochs}: mean loss {np.mean(losses[-batches_per_epoch:]):.4f}")
        self.model.eval()
        return losses

    def save(self, folder) -> None:
        self.model.save_pretrained(str(folder))  # safetensors
        self.tokenizer.save_pretrained(str(folder))


def _batches(pairs: list[tuple[str, str]], size: int, rng: random.Random):
    order = list(range(len(pairs)))
    rng.shuffle(order)
    batch, answers = [], set()
    for i in order:
        if pairs[i][1] in answers:
            continue  # this epoch skips it rather than make it a false negative
        batch.append(pairs[i])
        answers.add(pairs[i][1])
        if len(batch) == size:
            yield batch
            batch, answers = [], set()
    if len(batch) > 1:
        yield batch


def retrieval_metrics(ranked: np.ndarray, correct: list[set[int]], ks=(1, 5)) -> dict:
    """recall@k and MRR of ranked entry rows (queries x k) against each query's correct rows."""
    out = {f"recall@{k}": float(np.mean([bool(set(r[:k]) & c) for r, c in zip(ranked, correct)])) for k in ks}
    reciprocal = []
    for r, c in zip(ranked, correct):
        hit = next((rank for rank, row in enumerate(r, start=1) if row in c), None)
        reciprocal.append(1.0 / hit if hit else 0.0)
    out["mrr"] = float(np.mean(reciprocal))
    return out
