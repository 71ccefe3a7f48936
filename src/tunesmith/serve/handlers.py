"""The work behind /v1/predict: inputs checked and turned into model inputs, then answered by
the micro-batcher (classifiers, taggers, regression) or by generation (causal LMs), as JSON
or as server-sent events."""

import json
import logging

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from tunesmith.serve import answers
from tunesmith.serve.batcher import Busy
from tunesmith.serve.dependencies import ApiError, Served
from tunesmith.serve.engine import TimedOut
from tunesmith.serve.schemas import GENERATION_PARAMETERS, PredictParameters, PredictRequest, RerankRequest
from tunesmith.serve.security import mask_pii


def model_inputs(state: Served, body: PredictRequest) -> tuple[list, list]:
    """(raw values, model inputs) of a request, or an ApiError naming the input at fault."""
    settings, task = state.settings, state.task
    values = body.inputs if isinstance(body.inputs, list) else [body.inputs]
    if not values:
        raise ApiError(422, "inputs: give at least one text", "inputs")
    if len(values) > settings.max_inputs:
        raise ApiError(422, f"inputs: {len(values)} texts, the limit is {settings.max_inputs} per request", "inputs")
    raw, inputs = [], []
    for i, value in enumerate(values):
        value = value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value
        max_chars = None if task.serves_images else settings.max_text_chars  # images: the body limit applies
        for text in texts_of(value):
            check_text(text, f"inputs[{i}]", max_chars)
        try:
            limits = {"max_pixels": settings.max_image_pixels} if task.serves_images else {}
            inputs.append(task.serve_input(value, state.pairs, **limits))
        except ValueError as exc:
            raise ApiError(422, f"inputs[{i}]: {exc}", f"inputs[{i}]") from None
        raw.append(value)
    return raw, inputs


def texts_of(value) -> list[str]:
    """Every string an input holds: a text, a pair's two, a relation's text and entity names,
    a context and its questions."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for inner in value.values() for text in texts_of(inner)]
    if isinstance(value, list):
        return [text for inner in value for text in texts_of(inner)]
    return []


def check_text(text: str, field: str, max_chars: int | None) -> None:
    """ApiError 422 naming `field` for a text over `max_chars` characters or one no tokenizer reads."""
    if max_chars is not None and len(text) > max_chars:
        raise ApiError(422, f"{field}: {len(text)} characters, the limit is {max_chars}", field)
    problem = unreadable(text)
    if problem:
        raise ApiError(422, f"{field}: {problem}", field)


def unreadable(text: str) -> str | None:
    """Why a text cannot go to a tokenizer, or None. JSON can carry a lone surrogate
    ("\\ud800"), which is no Unicode character: the tokenizer would fail on it, and with it every
    request batched beside it. NUL characters are refused too (they end C strings downstream)."""
    if "\x00" in text:
        return f"contains a NUL character (at {text.index(chr(0))}); remove it"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode (a lone surrogate at character {exc.start}); send UTF-8 text"
    return None


async def predict(state: Served, request: Request, body: PredictRequest, client: str):
    raw, inputs = model_inputs(state, body)
    if state.settings.log_text and not state.task.serves_images:  # an image is no text to log
        texts = [t for v in raw for t in texts_of(v)]
        masked = await run_in_threadpool(lambda: [mask_pii(t) for t in texts])  # regexes off the event loop
        state.log.event("predict_text", client=client, texts=masked)
    if state.task.generative:
        return await generate(state, request, client, inputs, body.parameters)
    misplaced = sorted(body.parameters.model_fields_set & set(GENERATION_PARAMETERS))
    if misplaced:
        from tunesmith.tasks import supporting

        raise ApiError(422, f"parameters.{misplaced[0]}: only for {' and '.join(supporting('generative'))} runs",
                       f"parameters.{misplaced[0]}")
    try:
        rows = await state.batcher.submit(inputs)
    except Busy as exc:
        raise ApiError(503, f"server is busy ({exc}); retry shortly", headers={"Retry-After": "1"}) from None
    # Built here and returned as-is: re-validating our own output through the
    # response_model would cost more than the serialisation (the model documents it).
    top_k = body.parameters.top_k
    return JSONResponse([state.task.serve_output(v, row, state.predictor.labels, top_k) for v, row in zip(raw, rows)])


async def rerank(state: Served, body: RerankRequest) -> dict:
    """The documents ordered by the reranker's score for the query, best first."""
    settings = state.settings
    if len(body.documents) > settings.max_inputs:
        raise ApiError(422, f"documents: {len(body.documents)}, the limit is {settings.max_inputs} per request",
                       "documents")
    check_text(body.query, "query", settings.max_text_chars)
    for i, document in enumerate(body.documents):
        check_text(document, f"documents[{i}]", settings.max_text_chars)
    inputs = [state.task.serve_input({"text": body.query, "text_pair": d}, True) for d in body.documents]
    try:
        scores = await state.batcher.submit(inputs)
    except Busy as exc:
        raise ApiError(503, f"server is busy ({exc}); retry shortly", headers={"Retry-After": "1"}) from None
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))[: body.top_n]
    return {"model": state.run_info.get("run", "model"),
            "results": [{"index": i, "relevance_score": float(scores[i]),
                         **({"document": {"text": body.documents[i]}} if body.return_documents else {})}
                        for i in order]}


async def score(state: Served, body) -> dict:
    """Each answer's reward for the prompt, in the request's order, and the best one's position."""
    settings = state.settings
    if len(body.answers) > settings.max_inputs:
        raise ApiError(422, f"answers: {len(body.answers)}, the limit is {settings.max_inputs} per request", "answers")
    check_text(body.prompt, "prompt", settings.max_text_chars)
    for i, answer in enumerate(body.answers):
        check_text(answer, f"answers[{i}]", settings.max_text_chars)
    inputs = [state.task.serve_input({"text": body.prompt, "text_pair": a}, True) for a in body.answers]
    try:
        scores = [float(s) for s in await state.batcher.submit(inputs)]
    except Busy as exc:
        raise ApiError(503, f"server is busy ({exc}); retry shortly", headers={"Retry-After": "1"}) from None
    return {"model": state.run_info.get("run", "model"), "scores": scores, "best": max(range(len(scores)),
                                                                                        key=scores.__getitem__)}


async def generate(state: Served, request: Request, client: str, conversations: list,
                   parameters: PredictParameters):
    """Answers from the continuous-batching engine, as JSON or, with `stream`, as server-sent
    events: `data: {"text": piece}` while decoding, then `event: done` with the whole answer."""
    processor = state.predictor.tokenizer
    options = parameters.generation(processor.generation())
    if parameters.stream and len(conversations) != 1:
        raise ApiError(422, "parameters.stream: streams one input at a time", "parameters.stream")
    # In the model's chat format, or (text-to-text) in the run's template.
    prompts = await answers.prepare(state, client, [processor.prompt_text(c) for c in conversations], options,
                                    "parameters.max_new_tokens")
    if not parameters.stream:
        done = await answers.complete(state, request, answers.sequences(state, prompts, options))
        return JSONResponse([{"generated": c.text} | ({"warning": p.warning} if p.warning else {})
                             for p, c in zip(prompts, done)])
    return StreamingResponse(events(state, prompts[0], options), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def events(state: Served, prompt: answers.Prompt, options):
    try:
        async for item in answers.pieces(state, prompt, options):
            if isinstance(item, str):
                yield f"data: {json.dumps({'text': item}, ensure_ascii=False)}\n\n"
            else:
                done = {"generated": item.text} | ({"warning": prompt.warning} if prompt.warning else {})
                yield f"event: done\ndata: {json.dumps(done, ensure_ascii=False)}\n\n"
    except TimedOut:
        yield 'event: error\ndata: {"error": "generation ran past the request timeout"}\n\n'
    except Exception as exc:
        state.log.event("error", logging.ERROR, route="/v1/predict", error=type(exc).__name__)
        yield 'event: error\ndata: {"error": "internal error"}\n\n'
