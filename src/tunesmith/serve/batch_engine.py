"""Batched generation for encoder-decoder runs (summarization, translation with T5, BART,
Marian, NLLB): the requests waiting when the model is free are answered together by one
`model.generate`, which encodes their sources at once and decodes them in step.

The continuous-batching engine (engine.py) grows one decoder-only key/value cache; an
encoder-decoder has two caches and beam search, which `generate` already batches. What this
engine keeps from that one is the queue: the same fair share per client, the same Busy when
it is full, futures settled with a Completion, TimedOut or Cancelled. A batch holds requests
with the same generation settings (seeds aside: a sampled batch uses its first request's);
the others wait for the next one.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque

import torch

from tunesmith.serve.engine import Cancelled, Completion, GenerationEngine, Sequence, TimedOut, settle


class BatchEngine(GenerationEngine):
    def __init__(self, model, processor, max_batch: int = 16, max_waiting: int = 256):
        super().__init__(model, processor.tokenizer, max_batch, max_waiting)
        self.processor = processor
        self._held: deque[Sequence] = deque()  # taken from the queue, waiting for a batch of their settings
        self._answering = 0

    @property
    def active(self) -> int:
        return self._answering

    def _loop(self) -> None:
        with torch.inference_mode():
            while not self._stopping.is_set():
                batch = self._take()
                if not batch:
                    continue
                self._answering = len(batch)
                try:
                    self._answer(batch)
                except Exception as exc:  # a failure of the batch: fail its requests, keep serving
                    for sequence in batch:
                        settle(sequence, exc)
                finally:
                    self._answering = 0
        for sequence in self._held:
            settle(sequence, Cancelled("the server is shutting down"))

    def _take(self) -> list[Sequence]:
        """Up to max_batch live requests with the first one's settings."""
        batch: list[Sequence] = []
        kept: deque[Sequence] = deque()
        while len(batch) < self.max_batch:
            sequence = self._held.popleft() if self._held else self._next(block=not batch and not kept)
            if sequence is None:
                break
            if sequence.cancelled.is_set():
                settle(sequence, Cancelled("the client went away"))
            elif time.monotonic() > sequence.deadline:
                settle(sequence, TimedOut("generation ran past the request timeout before it started"))
            elif not batch or _same(sequence, batch[0]):
                batch.append(sequence)
            else:
                kept.append(sequence)
        self._held.extendleft(reversed(kept))
        return batch

    def _answer(self, batch: list[Sequence]) -> None:
        settings = batch[0].settings
        left = min(s.deadline for s in batch) - time.monotonic()
        outputs = self.processor.generate_ids(self.model, [s.prompt_ids for s in batch], settings,
                                              max_time=left if left != float("inf") else None)
        for sequence, ids in zip(batch, outputs):
            if sequence.cancelled.is_set():
                settle(sequence, Cancelled("the client went away"))
                continue
            text = self.processor.decode(ids, sequence.settings)
            ended = bool(ids) and ids[-1] in self.eos_ids
            if sequence.emit is not None and text:
                sequence.emit(text)  # the answer in one piece: generate decodes the batch together
            count = len(ids)
            settle(sequence, Completion(text, len(sequence.prompt_ids), count,
                                         "stop" if ended or count < settings.max_new_tokens else "length"))


def _same(one: Sequence, other: Sequence) -> bool:
    return dataclasses.replace(one.settings, seed=0) == dataclasses.replace(other.settings, seed=0)
