"""Continuous batching for text generation: requests join and leave a running batch between
decoding steps.

Generating one request at a time leaves a CPU mostly waiting on memory: one decoding step
reads every weight of the model to produce one token. Run as a batch, the same step produces
a token for every sequence in it for little more. But requests arrive at different times and
want different lengths, so a fixed batch would make a short answer wait for the longest one,
and a new request wait for the whole batch. Here the batch is rebuilt between steps instead:

- a new request is prefilled alone (one forward pass over its prompt) and its key/value cache
  joins the batch's, left-padded so that every row ends at the same column;
- each step feeds every row its last token and samples the next one with the row's own
  settings (greedy or temperature/top-p, with its own seeded generator);
- a row leaves as soon as it is finished (end of sequence, a stop string, its token limit,
  its deadline, or its client went away), and cache columns no row uses any more are dropped.

One thread owns the model and the batch; the event loop only hands requests in and gets
futures back. Models whose cache is not a plain growing key/value cache (sliding windows,
linear attention) are refused by `supports()`; the server then generates one request at a
time with `model.generate`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from tunesmith.generation import GenerationSettings, cut_at_stop


class Cancelled(Exception):
    """The request's client went away; nothing more is generated for it."""


class TimedOut(Exception):
    """The request ran past its deadline."""


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"


@dataclass
class Sequence:
    """One prompt being answered. `emit`, when set, receives the answer's text as it grows
    (called on the engine thread; never a piece of a stop string or half a character)."""

    prompt_ids: list[int]
    settings: GenerationSettings
    deadline: float = float("inf")  # time.monotonic() after which it fails with TimedOut
    emit: Optional[Callable[[str], None]] = None
    client: str = ""  # who asked (an API key's id): its share of the queue
    future: Future = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # filled in by the engine
    generated: list[int] = field(default_factory=list)
    text: str = ""  # the answer so far, cut at a stop string
    sent: str = ""  # the part of it passed to `emit`
    generator: Optional[torch.Generator] = None

    def cancel(self) -> None:
        self.cancelled.set()


FAIR_SHARE = 4  # a client may hold at most a quarter of the waiting places


class Busy(Exception):
    """Too many requests waiting to join the batch."""


def supports(model) -> bool:
    """Whether the model's cache is a plain key/value cache this engine can merge and split."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)


class GenerationEngine:
    def __init__(self, model, tokenizer, max_batch: int = 16, max_waiting: int = 256,
                 on_step: Callable[[int], None] = lambda rows: None):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_waiting, self.on_step = max_batch, max_waiting, on_step
        self.eos_ids = _eos_ids(model, tokenizer)
        self.device = next(model.parameters()).device
        self.cache_arg = _cache_argument(model)
        # Waiting sequences, a queue per client, taken in turn: one client's many requests never
        # stand in front of another's, and none may hold more than `per_client` places.
        self._queues: OrderedDict[str, deque[Sequence]] = OrderedDict()
        self._count = 0
        self._ready = threading.Condition()
        self.per_client = max(1, max_waiting // FAIR_SHARE)
        self._rows: list[Sequence] = []
        self._cache = None  # the batch's DynamicCache, one row per entry of _rows
        self._mask: Optional[torch.Tensor] = None  # [rows, columns]: 1 where a column holds a real token
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tunesmith-generate", daemon=True)

    # ---- the event loop's side ---------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return self._count

    @property
    def active(self) -> int:
        return len(self._rows)

    def start(self) -> None:
        self.model.eval()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)

    def submit(self, sequence: Sequence) -> Future:
        with self._ready:
            if self._count >= self.max_waiting:
                raise Busy(f"{self._count} generation requests are waiting")
            mine = self._queues.setdefault(sequence.client, deque())
            if len(mine) >= self.per_client:
                raise Busy(f"{len(mine)} of this caller's generation requests are waiting, its share of the queue")
            mine.append(sequence)
            self._count += 1
            self._ready.notify()
        return sequence.future

    def _next(self, block: bool) -> Optional[Sequence]:
        """The next waiting sequence, clients in turn; None when none waits (after up to 50 ms
        with `block`)."""
        with self._ready:
            if block and not self._count:
                self._ready.wait(timeout=0.05)
            if not self._count:
                return None
            client, mine = next(iter(self._queues.items()))
            sequence = mine.popleft()
            self._count -= 1
            del self._queues[client]
            if mine:  # to the back of the line
                self._queues[client] = mine
            return sequence

    # ---- the engine thread -------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while not self._stopping.is_set():
                try:
                    self._admit(block=not self._rows)
                    if self._rows:
                        self._step()
                except Exception as exc:  # a failure of the batch: fail its rows, keep serving
                    for row in self._rows:
                        settle(row, exc)
                    self._rows, self._cache, self._mask = [], None, None
        for row in self._rows:
            settle(row, Cancelled("the server is shutting down"))

    def _admit(self, block: bool) -> None:
        while len(self._rows) < self.max_batch:
            sequence = self._next(block)
            if sequence is None:
                return
            block = False
            if sequence.cancelled.is_set():
                settle(sequence, Cancelled("the client went away"))
                continue
            try:
                self._prefill(sequence)
            except Exception as exc:  # this prompt's own failure
                settle(sequence, exc)

    def _prefill(self, sequence: Sequence) -> None:
        from transformers import DynamicCache

        sequence.generator = torch.Generator(device="cpu").manual_seed(sequence.settings.seed)
        ids = torch.tensor([sequence.prompt_ids], device=self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, use_cache=True, **{self.cache_arg: cache})  # fills `cache`
        self._join(sequence, cache, len(sequence.prompt_ids))
        self._advance([sequence], out.logits[:, -1, :])

    def _join(self, sequence: Sequence, cache, length: int) -> None:
        """Add a prefilled row to the batch: both sides left-padded to the longer of the two."""
        if not self._rows:
            self._rows, self._cache = [sequence], cache
            self._mask = torch.ones((1, length), dtype=torch.long, device=self.device)
            return
        columns = self._mask.shape[1]
        width = max(columns, length)
        for batch_layer, new_layer in zip(self._cache.layers, cache.layers):
            batch_layer.keys = torch.cat([_pad_left(batch_layer.keys, width - columns),
                                          _pad_left(new_layer.keys, width - length)])
            batch_layer.values = torch.cat([_pad_left(batch_layer.values, width - columns),
                                            _pad_left(new_layer.values, width - length)])
        new_mask = torch.zeros((1, width), dtype=torch.long, device=self.device)
        new_mask[0, width - length:] = 1
        self._mask = torch.cat([_pad_left(self._mask, width - columns), new_mask])
        self._rows.append(sequence)

    def _step(self) -> None:
        """One decoding step for every row: feed its last token, pick its next."""
        self.on_step(len(self._rows))
        last = torch.tensor([[row.generated[-1]] for row in self._rows], device=self.device)
        self._mask = torch.cat([self._mask, torch.ones((len(self._rows), 1), dtype=torch.long, device=self.device)], 1)
        # Each row's position counts its own tokens, not the padding to its left.
        positions = (self._mask.sum(1, keepdim=True) - 1)
        out = self.model(input_ids=last, attention_mask=self._mask, position_ids=positions, use_cache=True,
                         **{self.cache_arg: self._cache})  # appends this step's keys and values to it
        self._advance(self._rows, out.logits[:, -1, :])

    def _advance(self, rows: list[Sequence], logits: torch.Tensor) -> None:
        """Pick each row's next token, pass on its new text, and let finished rows leave."""
        finished = []
        now = time.monotonic()
        for row, row_logits in zip(rows, logits):
            try:
                reason = self._next_token(row, row_logits)
            except Exception as exc:  # this row's own failure: it leaves, the others go on
                reason = exc
            if reason is None and row.cancelled.is_set():
                reason = "cancelled"
            if reason is None and now > row.deadline:
                reason = "timeout"
            if reason is not None:
                finished.append((row, reason))
        if finished:
            self._leave(finished)

    def _next_token(self, row: Sequence, logits: torch.Tensor) -> Optional[str]:
        """Append the row's next token; why it is finished ("stop", "length"), or None."""
        token = _pick(logits, row.settings, row.generator)
        if token in self.eos_ids:
            return "stop"
        row.generated.append(token)
        reason = self._pass_on(row)
        if reason is None and len(row.generated) >= row.settings.max_new_tokens:
            reason = "length"
        return reason

    def _pass_on(self, row: Sequence) -> Optional[str]:
        """Keep the answer's text (cut at a stop string) and stream the part of it that is
        final; "stop" when a stop string has appeared."""
        decoded = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        row.text = cut_at_stop(decoded, row.settings.stop)
        stopped = len(row.text) < len(decoded)
        final = row.text
        if not stopped:
            final = final.rstrip("\ufffd")  # half a character: its next bytes are still to come
            # Hold back an ending that may be the start of a stop string.
            held = max((k for s in row.settings.stop for k in range(1, len(s)) if final.endswith(s[:k])), default=0)
            final = final[: len(final) - held]
        if row.emit is not None and len(final) > len(row.sent) and final.startswith(row.sent):
            row.emit(final[len(row.sent):])
        row.sent = final if final.startswith(row.sent) else row.sent
        return "stop" if stopped else None

    def _leave(self, finished: list[tuple[Sequence, object]]) -> None:
        self._drop({id(row) for row, _ in finished})
        # Answered after leaving: whoever awaits the answer then sees the batch without it.
        for row, reason in finished:
            if isinstance(reason, Exception):
                settle(row, reason)
            elif reason == "cancelled":
                settle(row, Cancelled("the client went away"))
            elif reason == "timeout":
                settle(row, TimedOut(f"generation ran past the request timeout after "
                                      f"{len(row.generated)} tokens"))
            else:  # row.text is already the whole answer: the last step decoded it
                if row.emit is not None and len(row.text) > len(row.sent):
                    row.emit(row.text[len(row.sent):])
                settle(row, Completion(row.text, len(row.prompt_ids), len(row.generated), reason))

    def _drop(self, gone: set[int]) -> None:
        """Remove the rows whose id() is in `gone` from the batch and its cache."""
        keep = [i for i, row in enumerate(self._rows) if id(row) not in gone]
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, device=self.device)
        self._rows = [self._rows[i] for i in keep]
        self._mask = self._mask[index]
        # Columns that are padding in every remaining row hold nothing any row attends to.
        first = int((self._mask.sum(0) > 0).nonzero()[0])
        self._mask = self._mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]


MIN_TEMPERATURE = 1e-4  # below it, sampling is greedy (and logits / temperature stays finite)


def _pick(logits: torch.Tensor, settings: GenerationSettings, generator: torch.Generator) -> int:
    if settings.temperature < MIN_TEMPERATURE:  # 0, or so close that dividing by it overflows
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        # Keep the most likely tokens until their mass reaches top_p (always at least one).
        outside = ordered.cumsum(0) - ordered >= settings.top_p
        outside[0] = False  # a top_p that rounds to 0 in float32 would otherwise keep nothing
        ordered[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, ordered)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def _pad_left(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    """`columns` zero columns before the sequence axis (dim 2 of a cache, dim 1 of a mask)."""
    if columns == 0:
        return tensor
    axis = 2 if tensor.dim() == 4 else 1
    shape = list(tensor.shape)
    shape[axis] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)


def _cache_argument(model) -> str:
    """The forward argument that takes the cache: transformers 5 renamed `past_key_values` to
    `cache` (the old name still works, with a deprecation warning)."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def settle(sequence: Sequence, outcome) -> None:
    if sequence.future.done():
        return
    if isinstance(outcome, BaseException):
        sequence.future.set_exception(outcome)
    else:
        sequence.future.set_result(outcome)
