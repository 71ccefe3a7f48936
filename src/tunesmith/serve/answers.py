"""Generation requests, whichever route they came by (/v1/predict of a causal-lm run, or the
OpenAI-compatible routes): prompts checked against the limits and cut to the context, the
caller's token budget charged, the answers awaited from the continuous-batching engine with a
deadline, and abandoned the moment their client goes away."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import AsyncIterator, Optional

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from tunesmith.generation import GenerationSettings
from tunesmith.serve.dependencies import ApiError, Served
from tunesmith.serve.engine import Busy, Cancelled, Completion, Sequence, TimedOut

DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there


@dataclass
class Prompt:
    ids: list[int]
    warning: Optional[str] = None  # set when the prompt was cut to fit the context
    client: str = ""  # who asked: the engine gives each client a fair share of its queue


def context_length(model, tokenizer) -> int:
    """Tokens the model can attend to: its position limit (else the tokenizer's, else 2048)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else 2048


async def prepare(state: Served, client: str, texts: list[str], options: GenerationSettings,
                  field: str) -> list[Prompt]:
    """Token ids of each prompt, within every limit, or an ApiError naming what is over which.
    Tokenising a long prompt takes a while: it runs off the event loop."""
    return await run_in_threadpool(_prepare, state, client, texts, options, field)


def _prepare(state: Served, client: str, texts: list[str], options: GenerationSettings, field: str) -> list[Prompt]:
    limits = state.settings
    if options.max_new_tokens > limits.max_new_tokens:
        raise ApiError(422, f"{field}: {options.max_new_tokens} new tokens asked, the limit is {limits.max_new_tokens}",
                       field)
    processor = state.predictor.tokenizer
    context = context_length(state.predictor.model, processor.tokenizer)
    # The prompt's share of the context; an encoder reads the whole context, its decoder has its own.
    room = context if processor.encoder_decoder else context - options.max_new_tokens
    if room < 1:
        raise ApiError(422, f"{field}: {options.max_new_tokens} new tokens leave no room for the prompt in the "
                            f"model's context of {context} tokens", field)
    prompts = []
    for i, text in enumerate(texts):
        ids = processor.prompt_ids(text)
        if not ids:
            raise ApiError(422, f"inputs[{i}]: the prompt is empty", f"inputs[{i}]")
        if len(ids) <= room:
            prompts.append(Prompt(ids, client=client))
        elif limits.long_prompts == "error":
            raise ApiError(422, f"inputs[{i}]: the prompt has {len(ids)} tokens; with {options.max_new_tokens} new "
                                f"tokens the model's context of {context} allows {room}", f"inputs[{i}]")
        elif processor.encoder_decoder:  # a source: keep its start (and its closing special token), as training did
            prompts.append(Prompt(ids[: room - 1] + ids[-1:], f"source cut to its first {room} of {len(ids)} tokens to "
                                                              f"fit the model's context of {context}", client))
        else:  # keep the end: the question and the turn the answer follows are there
            prompts.append(Prompt(ids[-room:], f"prompt cut to its last {room} of {len(ids)} tokens to fit the "
                                               f"model's context of {context} with {options.max_new_tokens} new tokens",
                                  client))
    total = sum(len(p.ids) + options.max_new_tokens for p in prompts)
    if total > limits.max_request_tokens:
        raise ApiError(422, f"inputs: {total} prompt and answer tokens in one request, the limit is "
                            f"{limits.max_request_tokens}; send fewer or shorter prompts, or fewer new tokens", "inputs")
    budget = limits.tokens_per_minute
    if total > budget:
        raise ApiError(422, f"inputs: {total} tokens in one request, above the budget of {budget} tokens a minute",
                       "inputs")
    wait = state.token_budget.check(client, total)
    if wait > 0:
        raise ApiError(429, f"token budget of {budget} tokens a minute used up",
                       headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    return prompts


def sequences(state: Served, prompts: list[Prompt], options: GenerationSettings, emit=None) -> list[Sequence]:
    deadline = time.monotonic() + state.settings.request_timeout_s
    # Each prompt its own seed (the request's, then the next ones): equal prompts in one
    # sampled request give different answers, and the request as a whole reproduces.
    return [Sequence(p.ids, _with_seed(options, options.seed + i), deadline, emit, client=p.client)
            for i, p in enumerate(prompts)]


def submit(state: Served, batch: list[Sequence]) -> None:
    try:
        for sequence in batch:
            state.engine.submit(sequence)
    except Busy as exc:
        for sequence in batch:
            sequence.cancel()
        raise ApiError(503, f"server is busy ({exc}); retry shortly", headers={"Retry-After": "1"}) from None


async def complete(state: Served, request: Request, batch: list[Sequence]) -> list[Completion]:
    """The answers, or ApiError 504 past the deadline; the engine stops decoding them when the
    client disconnects or the deadline passes."""
    submit(state, batch)
    waiting = [asyncio.wrap_future(s.future) for s in batch]
    try:
        while True:
            _, pending = await asyncio.wait(waiting, timeout=DISCONNECT_POLL_S)
            if not pending:
                break
            if await request.is_disconnected():
                raise Cancelled("the client went away")
        results = [w.result() for w in waiting]
    except TimedOut:
        raise ApiError(504, f"generation ran past the request timeout of {state.settings.request_timeout_s:g} s; "
                            "ask for fewer tokens") from None
    finally:
        for sequence, future in zip(batch, waiting):  # a no-op for finished ones
            sequence.cancel()
            _forget(future)
    state.metrics.generated_tokens += sum(r.completion_tokens for r in results)
    return results


async def pieces(state: Served, prompt: Prompt, options: GenerationSettings) -> AsyncIterator[object]:
    """The answer as it is decoded: text pieces (str), then the Completion. Closing the
    iterator (the client went away: Starlette cancels the response) stops the decoding."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    (sequence,) = sequences(state, [prompt], options, emit=lambda text: loop.call_soon_threadsafe(queue.put_nowait, text))
    submit(state, [sequence])
    finished = asyncio.wrap_future(sequence.future)
    try:
        while True:
            piece = asyncio.ensure_future(queue.get())
            await asyncio.wait({piece, finished}, return_when=asyncio.FIRST_COMPLETED)
            if piece.done():
                yield piece.result()
                continue
            piece.cancel()
            while not queue.empty():
                yield queue.get_nowait()
            completion = finished.result()  # raises TimedOut / Cancelled / the model's error
            state.metrics.generated_tokens += completion.completion_tokens
            yield completion
            return
    finally:
        sequence.cancel()
        _forget(finished)


def _forget(future: asyncio.Future) -> None:
    """Nobody awaits this answer any more: take its outcome when it comes (a Cancelled), so
    asyncio does not log it as an exception never retrieved."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())


def _with_seed(options: GenerationSettings, seed: int) -> GenerationSettings:
    from dataclasses import replace

    return replace(options, seed=seed % 2**31)
