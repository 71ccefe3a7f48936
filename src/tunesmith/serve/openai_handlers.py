"""The work behind the OpenAI-compatible routes: the request turned into prompts (a chat's
messages rendered with the run's chat template), answered by the same engine and under the
same limits as /v1/predict, and written in OpenAI's shapes, whole or as stream chunks."""

from __future__ import annotations

import json
import logging
import secrets
import time

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from tunesmith.generation import GenerationSettings
from tunesmith.serve import answers
from tunesmith.serve.dependencies import ApiError, Served
from tunesmith.serve.engine import Completion, TimedOut
from tunesmith.serve.handlers import check_text
from tunesmith.serve.batcher import Busy
from tunesmith.serve.openai_schemas import ChatRequest, CompletionRequest, EmbeddingRequest, _Sampling

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def models(state: Served) -> dict:
    return {"object": "list", "data": [{"id": state.run_info.get("run", "model"), "object": "model",
                                        "created": state.run_info.get("created", 0), "owned_by": "tunesmith"}]}


async def completions(state: Served, request: Request, body: CompletionRequest, client: str):
    _check_model(state, body)
    texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(texts) > state.settings.max_inputs:
        raise ApiError(422, f"prompt: {len(texts)} prompts, the limit is {state.settings.max_inputs} per request",
                       "prompt")
    for i, text in enumerate(texts):
        check_text(text, f"prompt[{i}]" if len(texts) > 1 else "prompt", state.settings.max_text_chars)
    if body.stream and len(texts) != 1:
        raise ApiError(422, "stream: streams one prompt at a time", "stream")
    return await _answer(state, request, body, client, texts, body.max_tokens, "text_completion")


async def chat(state: Served, request: Request, body: ChatRequest, client: str):
    from tunesmith.data.conversations import render_prompt

    _check_model(state, body)
    for i, message in enumerate(body.messages):
        check_text(message.text(), f"messages[{i}].content", state.settings.max_text_chars)
    conversation = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
    prompt = render_prompt(state.predictor.tokenizer.tokenizer, conversation)
    new_tokens = body.max_completion_tokens or body.max_tokens or state.settings.max_new_tokens
    return await _answer(state, request, body, client, [prompt], new_tokens, "chat.completion")


async def embeddings(state: Served, body: EmbeddingRequest) -> dict:
    """OpenAI's embeddings answer: one vector per input text, as floats or base64 float32."""
    import base64

    import numpy as np

    _check_model(state, body)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise ApiError(422, "input: give at least one text", "input")
    if len(texts) > state.settings.max_inputs:
        raise ApiError(422, f"input: {len(texts)} texts, the limit is {state.settings.max_inputs} per request", "input")
    for i, text in enumerate(texts):
        check_text(text, f"input[{i}]" if len(texts) > 1 else "input", state.settings.max_text_chars)
    try:
        rows = await state.batcher.submit([state.task.serve_input(text, False) for text in texts])
    except Busy as exc:
        raise ApiError(503, f"server is busy ({exc}); retry shortly", headers={"Retry-After": "1"}) from None
    size = len(rows[0])
    if body.dimensions is not None and body.dimensions != size:
        raise ApiError(422, f"dimensions: this model gives {size}-dimensional vectors; leave dimensions out",
                       "dimensions")
    vectors = [np.asarray(row, dtype="<f4") for row in rows]
    encoded = ([base64.b64encode(v.tobytes()).decode() for v in vectors] if body.encoding_format == "base64"
               else [v.tolist() for v in vectors])
    tokens = sum(len(ids) for ids in state.predictor.tokenizer(texts, truncation=True,
                                                                 max_length=state.predictor.max_length)["input_ids"])
    return {"object": "list", "model": state.run_info.get("run", "model"),
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def _answer(state: Served, request: Request, body: _Sampling, client: str, texts: list[str],
                  new_tokens: int, kind: str):
    options = GenerationSettings(max_new_tokens=new_tokens, temperature=body.temperature, top_p=body.top_p,
                                 stop=body.stops(),
                                 seed=body.seed if body.seed is not None else secrets.randbelow(2**31))
    field = "max_completion_tokens" if kind == "chat.completion" and body.max_completion_tokens else "max_tokens"
    prompts = await answers.prepare(state, client, texts, options, field)
    warnings = [p.warning for p in prompts if p.warning]
    headers = {"X-Tunesmith-Warning": warnings[0]} if warnings else {}
    head = {"id": ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + secrets.token_hex(12),
            "created": int(time.time()), "model": body.model}
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_chunks(state, prompts[0], options, head, kind, usage),
                                 media_type="text/event-stream", headers=STREAM_HEADERS | headers)
    done = await answers.complete(state, request, answers.sequences(state, prompts, options))
    if kind == "chat.completion":
        choices = [{"index": 0, "message": {"role": "assistant", "content": done[0].text}, "logprobs": None,
                    "finish_reason": done[0].finish_reason}]
    else:
        choices = [{"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                   for i, c in enumerate(done)]
    return JSONResponse(head | {"object": kind, "choices": choices, "usage": _usage(done)}, headers=headers)


async def _chunks(state: Served, prompt: answers.Prompt, options: GenerationSettings, head: dict, kind: str,
                  include_usage: bool):
    """OpenAI's stream: one `data:` JSON chunk per piece, a last one with the finish reason
    (and one with the usage when asked), then `data: [DONE]`."""
    chat = kind == "chat.completion"
    head = head | {"object": "chat.completion.chunk" if chat else "text_completion"}

    def chunk(text: str | None, finish: str | None = None) -> str:
        if chat:
            delta = {} if text is None else {"content": text}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return f"data: {json.dumps(head | {'choices': [choice]}, ensure_ascii=False)}\n\n"

    if chat:  # OpenAI's first chunk names the role
        first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        yield f"data: {json.dumps(head | {'choices': [first]})}\n\n"
    try:
        async for item in answers.pieces(state, prompt, options):
            if isinstance(item, str):
                yield chunk(item)
                continue
            yield chunk(None, item.finish_reason)
            if include_usage:
                yield f"data: {json.dumps(head | {'choices': [], 'usage': _usage([item])})}\n\n"
    except TimedOut:
        yield _error_chunk("generation ran past the request timeout", "timeout")
    except Exception as exc:
        state.log.event("error", logging.ERROR, route="/v1/" + ("chat/completions" if chat else "completions"),
                        error=type(exc).__name__)
        yield _error_chunk("internal error", "server_error")
    yield "data: [DONE]\n\n"


def _error_chunk(message: str, kind: str) -> str:
    return f"data: {json.dumps({'error': {'message': message, 'type': kind, 'param': None, 'code': None}})}\n\n"


def _usage(done: list[Completion]) -> dict:
    prompt, completion = sum(c.prompt_tokens for c in done), sum(c.completion_tokens for c in done)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _check_model(state: Served, body: _Sampling | EmbeddingRequest) -> None:
    served = state.run_info.get("run", "model")
    if body.model != served:
        raise ApiError(404, f"model: '{body.model[:100]}' is not served here; this server serves '{served}' "
                            "(GET /v1/models)", "model")

