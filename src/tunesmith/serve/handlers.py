"""The work behind /v1/predict: inputs checked and turned into model inputs, then answered by
the micro-batcher (classifiers, taggers, regression) or by generation (causal LMs), as JSON
or as server-sent events."""

import asyncio
import json
import logging

from fastapi.responses import JSONResponse, StreamingResponse

from tunesmith.serve.batcher import Busy
from tunesmith.serve.dependencies import ApiError, Served
from tunesmith.serve.schemas import GENERATION_PARAMETERS, PredictParameters, PredictRequest, TextPair
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
        value = value.model_dump() if isinstance(value, TextPair) else value
        for text in (value.values() if isinstance(value, dict) else [value]):
            if len(text) > settings.max_text_chars and not task.serves_images:  # images: the body limit applies
                raise ApiError(422, f"inputs[{i}]: {len(text)} characters, the limit is {settings.max_text_chars}",
                               f"inputs[{i}]")
            problem = unreadable(text)
            if problem:
                raise ApiError(422, f"inputs[{i}]: {problem}", f"inputs[{i}]")
        try:
            inputs.append(task.serve_input(value, state.pairs))
        except ValueError as exc:
            raise ApiError(422, f"inputs[{i}]: {exc}", f"inputs[{i}]") from None
        raw.append(value)
    return raw, inputs


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


async def predict(state: Served, body: PredictRequest, client: str):
    raw, inputs = model_inputs(state, body)
    if state.settings.log_text and not state.task.serves_images:  # an image is no text to log
        texts = [t for v in raw for t in (v.values() if isinstance(v, dict) else [v])]
        state.log.event("predict_text", client=client, texts=[mask_pii(t) for t in texts])
    if state.task.generative:
        return await generate(state, inputs, body.parameters)
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


async def generate(state: Served, conversations: list, parameters: PredictParameters):
    """Answers, on the inference thread (one generation at a time, each batched over its
    inputs), as JSON or, with `stream`, as server-sent events: `data: {"text": piece}`
    while decoding, then `event: done` with the whole answer."""
    from tunesmith.data.conversations import render_prompt
    from tunesmith.generation import generate as generate_answers

    tokenizer = state.predictor.tokenizer.tokenizer
    prompts = [render_prompt(tokenizer, c) for c in conversations]
    options = parameters.generation()
    if not parameters.stream:
        answers = await state.batcher.run(generate_answers, state.predictor.model, tokenizer, prompts, options)
        return JSONResponse([{"generated": a} for a in answers])
    if len(prompts) != 1:
        raise ApiError(422, "parameters.stream: streams one input at a time", "parameters.stream")
    return StreamingResponse(events(state, tokenizer, prompts, options), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def events(state: Served, tokenizer, prompts, options):
    from tunesmith.generation import generate as generate_answers

    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()

    def emit(text: str) -> None:  # called on the inference thread
        loop.call_soon_threadsafe(pieces.put_nowait, text)

    job = asyncio.ensure_future(state.batcher.run(generate_answers, state.predictor.model, tokenizer, prompts,
                                                  options, emit))
    while True:
        next_piece = asyncio.ensure_future(pieces.get())
        done, _ = await asyncio.wait({next_piece, job}, return_when=asyncio.FIRST_COMPLETED)
        if next_piece in done:
            yield f"data: {json.dumps({'text': next_piece.result()}, ensure_ascii=False)}\n\n"
            continue
        next_piece.cancel()
        while not pieces.empty():
            yield f"data: {json.dumps({'text': pieces.get_nowait()}, ensure_ascii=False)}\n\n"
        if job.exception() is not None:
            state.log.event("error", logging.ERROR, route="/v1/predict", error=type(job.exception()).__name__)
            yield 'event: error\ndata: {"error": "internal error"}\n\n'
        else:
            yield f"event: done\ndata: {json.dumps({'generated': job.result()[0]}, ensure_ascii=False)}\n\n"
        return
