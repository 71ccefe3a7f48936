"""The HTTP API. Routes stay thin: auth and limits are dependencies and middleware,
inference is the micro-batcher's job, and the shapes are pydantic models (so /openapi.json
documents them).

    POST /v1/predict   {"inputs": "text" | ["text", ...], "parameters": {"top_k": 3}}
                       (pair runs: {"text": ..., "text_pair": ...} per input; the answer's shape is
                       the task's: label + scores, score, labels + scores, entities, or generated
                       text: causal LMs take max_new_tokens, temperature, top_p, stop and stream
                       (server-sent events) as parameters)
    GET  /v1/model     task, labels, base model, metrics of the run
    GET  /healthz      the process is up (no auth: for liveness probes)
    GET  /readyz       the model is loaded and warm, and not draining (no auth)
    GET  /metrics      Prometheus text format
    GET  /openapi.json the schema
"""

# No `from __future__ import annotations` here: FastAPI resolves the dependency aliases
# defined inside create_app from real annotation objects.

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Optional, Union

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.serve.batcher import MicroBatcher
from tunesmith.serve.security import KeyRing, RateLimiter, mask_pii
from tunesmith.serve.settings import ServeSettings
from tunesmith.serve.telemetry import JsonLog, Metrics

OPEN_ROUTES = {"/healthz", "/readyz", "/openapi.json"}


class PredictParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: Optional[int] = Field(None, ge=1, description="Return only the k most likely labels in `scores`.")
    # Causal LM runs (causal-lm, preference) only:
    max_new_tokens: Optional[int] = Field(None, ge=1, le=2048, description="Longest answer in tokens (default 128).")
    temperature: Optional[float] = Field(None, ge=0, le=5, description="0: greedy (default); > 0: sampling.")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling mass, with temperature > 0.")
    stop: Optional[list[str]] = Field(None, max_length=8, description="Stop at the first of these strings (not included).")
    stream: bool = Field(False, description="Send the answer as server-sent events while it is generated (one input).")

    def generation(self):
        from tunesmith.generation import GenerationSettings

        return GenerationSettings(max_new_tokens=self.max_new_tokens or 128, temperature=self.temperature or 0.0,
                                  top_p=self.top_p or 1.0, stop=list(self.stop or []))


GENERATION_PARAMETERS = ("max_new_tokens", "temperature", "top_p", "stop", "stream")


class TextPair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    text_pair: str


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Union[str, TextPair, list[Union[str, TextPair]]] = Field(
        description="One input or a list: texts, or {text, text_pair} objects for pair runs (see GET /v1/model 'input').")
    parameters: PredictParameters = Field(default_factory=PredictParameters)


class ClassificationOutput(BaseModel):
    label: str
    score: float
    scores: dict[str, float]


class RegressionOutput(BaseModel):
    score: float


class MultiLabelOutput(BaseModel):
    labels: list[str]
    scores: dict[str, float]


class Entity(BaseModel):
    type: str
    text: str
    start: int
    end: int
    score: float


class EntitiesOutput(BaseModel):
    entities: list[Entity]


class GenerationOutput(BaseModel):
    generated: str


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: Optional[str] = None, headers: Optional[dict] = None):
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


def create_app(predictor, settings: ServeSettings, keys: KeyRing, run_info: dict) -> FastAPI:
    """An app serving `predictor` (anything with .predict(inputs) and .labels) of the run's task."""
    from tunesmith.tasks import TASKS

    task = TASKS[run_info.get("task", "text-classification")]
    pairs = run_info.get("input") == "text_pair"
    generative = hasattr(task, "answer_metrics")  # answers are generated text
    images = getattr(task, "serves_images", False)  # inputs are base64 images (or multipart uploads)
    log = JsonLog()
    metrics = Metrics({"task": run_info.get("task", ""), "base_model": run_info.get("base_model", ""),
                       "run": run_info.get("run", ""), "backend": settings.backend})
    limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    # A micro-batch gathers whatever requests arrived together, short and long mixed: run as one
    # forward pass, every text would be padded to the longest. The predictor sorts it by length
    # and runs slices of `forward_batch_size` texts instead (random groups of 32 tweets on 2
    # cores: 84 texts/s as one pass, 139 in slices of 8; bench/onnx_predict.py).
    batcher = MicroBatcher(lambda inputs: task.output_rows(predictor.predict(inputs, settings.forward_batch_size)),
                           settings.batch_max_size, settings.batch_max_wait_ms,
                           on_batch=metrics.batch_size.observe)
    metrics.queue_depth = lambda: batcher.depth

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        # The first call pays one-off costs; do it before ready.
        await batcher.submit([task.serve_input(_warm_up_input(pairs, images), pairs)])
        app.state.ready = True
        log.event("ready", run=run_info.get("run"), auth=bool(keys), workers=settings.workers)
        yield
        app.state.draining = True
        await batcher.stop()
        log.event("stopped")

    app = FastAPI(title="tunesmith", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.ready = False
    app.state.draining = False

    # --- dependencies ----------------------------------------------------------------
    # `async def` on purpose: they never block, and FastAPI runs a plain `def` dependency in
    # its thread pool, a thread hand-off per dependency per request (measured: the event
    # loop then spent more time switching threads than serving).

    async def client_id(request: Request) -> str:
        """The caller: an API key's id, or (with auth off) its address."""
        if not keys:
            return request.client.host if request.client else "local"
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not key:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                           headers={"WWW-Authenticate": "Bearer"})
        identity = keys.identify(key)
        if identity is None:
            raise ApiError(403, "API key not accepted")
        return identity

    async def rate_limited(client: Annotated[str, Depends(client_id)]) -> str:
        wait = limiter.check(client)
        if wait > 0:
            raise ApiError(429, f"rate limit of {settings.rate_limit:g} requests/s exceeded",
                           headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        return client

    Caller = Annotated[str, Depends(rate_limited)]

    # --- routes ------------------------------------------------------------------------

    Output = Union[ClassificationOutput, RegressionOutput, MultiLabelOutput, EntitiesOutput, GenerationOutput]

    @app.post("/v1/predict", response_model=list[Output])
    async def predict(body: PredictRequest, client: Caller) -> JSONResponse:
        values = body.inputs if isinstance(body.inputs, list) else [body.inputs]
        if not values:
            raise ApiError(422, "inputs: give at least one text", "inputs")
        if len(values) > settings.max_inputs:
            raise ApiError(422, f"inputs: {len(values)} texts, the limit is {settings.max_inputs} per request", "inputs")
        raw, inputs = [], []
        for i, value in enumerate(values):
            value = value.model_dump() if isinstance(value, TextPair) else value
            for text in (value.values() if isinstance(value, dict) else [value]):
                if len(text) > settings.max_text_chars and not images:  # images: the body limit applies
                    raise ApiError(422, f"inputs[{i}]: {len(text)} characters, the limit is {settings.max_text_chars}",
                                   f"inputs[{i}]")
            try:
                inputs.append(task.serve_input(value, pairs))
            except ValueError as exc:
                raise ApiError(422, f"inputs[{i}]: {exc}", f"inputs[{i}]") from None
            raw.append(value)
        if settings.log_text and not images:  # an image is no text to log
            texts = [t for v in raw for t in (v.values() if isinstance(v, dict) else [v])]
            log.event("predict_text", client=client, texts=[mask_pii(t) for t in texts])
        given = body.parameters.model_fields_set
        if generative:
            return await _generate(inputs, body.parameters)
        misplaced = sorted(given & set(GENERATION_PARAMETERS))
        if misplaced:
            raise ApiError(422, f"parameters.{misplaced[0]}: only for causal-lm and preference runs", f"parameters.{misplaced[0]}")
        rows = await batcher.submit(inputs)
        # Built here and returned as-is: re-validating our own output through the
        # response_model would cost more than the serialisation (the model documents it).
        top_k = body.parameters.top_k
        return JSONResponse([task.serve_output(v, row, predictor.labels, top_k) for v, row in zip(raw, rows)])

    async def _generate(conversations: list, parameters: PredictParameters):
        """Answers, on the inference thread (one generation at a time, each batched over its
        inputs), as JSON or, with `stream`, as server-sent events: `data: {"text": piece}`
        while decoding, then `event: done` with the whole answer."""
        from tunesmith.data.conversations import render_prompt
        from tunesmith.generation import generate

        tokenizer = predictor.tokenizer.tokenizer
        prompts = [render_prompt(tokenizer, c) for c in conversations]
        options = parameters.generation()
        if not parameters.stream:
            answers = await batcher.run(generate, predictor.model, tokenizer, prompts, options)
            return JSONResponse([{"generated": a} for a in answers])
        if len(prompts) != 1:
            raise ApiError(422, "parameters.stream: streams one input at a time", "parameters.stream")
        return StreamingResponse(_events(tokenizer, prompts, options), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _events(tokenizer, prompts, options):
        from tunesmith.generation import generate

        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()

        def emit(text: str) -> None:  # called on the inference thread
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        job = asyncio.ensure_future(batcher.run(generate, predictor.model, tokenizer, prompts, options, emit))
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
                log.event("error", logging.ERROR, route="/v1/predict", error=type(job.exception()).__name__)
                yield 'event: error\ndata: {"error": "internal error"}\n\n'
            else:
                yield f"event: done\ndata: {json.dumps({'generated': job.result()[0]}, ensure_ascii=False)}\n\n"
            return

    @app.get("/v1/model")
    async def model(client: Caller) -> dict:
        return run_info

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = app.state.ready and not app.state.draining
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus(client: Caller) -> str:
        return metrics.render()

    # --- errors: one JSON shape, {"error": ..., "field": ...} ----------------------------

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        body = {"error": exc.message} | ({"field": exc.field} if exc.field else {})
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        field = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return JSONResponse({"error": f"{field}: {first['msg']}", "field": field}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:  # never leak internals
        log.event("error", logging.ERROR, route=request.url.path, error=type(exc).__name__)
        return JSONResponse({"error": "internal error"}, status_code=500)

    # --- middleware (pure ASGI; Starlette's BaseHTTPMiddleware costs ~1 ms a request) ---------
    # Order, outside in: Observe (draining, metrics, access log) -> BodyLimit -> routes.

    if images:
        app.add_middleware(MultipartImages)  # inside BodyLimit: the upload is counted first
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Observe, routes={route.path for route in app.routes}, metrics=metrics, log=log,
                       is_draining=lambda: app.state.draining)

    app.state.metrics = metrics
    app.state.batcher = batcher
    return app


def _warm_up_input(pairs: bool, images: bool):
    if images:
        import base64
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()
    return {"text": "warm-up", "text_pair": "warm-up"} if pairs else "warm-up"


class MultipartImages:
    """Pure ASGI middleware for image runs: a multipart/form-data POST to /v1/predict (one or
    more files in the field `inputs`, or any file fields) becomes the JSON request
    {"inputs": [base64, ...]}, so the route, its limits and its errors stay the same."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        content_type = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
        if scope["type"] != "http" or scope["path"] != "/v1/predict" or not content_type.startswith("multipart/form-data"):
            return await self.app(scope, receive, send)
        import base64

        from starlette.datastructures import UploadFile
        from starlette.requests import Request

        try:
            form = await Request(scope, receive).form()
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            encoded = [base64.b64encode(await f.read()).decode() for f in files]
        except StarletteHTTPException:
            raise
        except Exception:
            return await JSONResponse({"error": "inputs: not a readable multipart/form-data body", "field": "inputs"},
                                      status_code=422)(scope, receive, send)
        body = json.dumps({"inputs": encoded}).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        sent = False

        async def json_receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": headers}, json_receive, send)


class Observe:
    """Pure ASGI middleware: 503 while draining; request metrics and the JSON access log."""

    def __init__(self, app, routes: set, metrics: Metrics, log: JsonLog, is_draining):
        self.app, self.routes, self.metrics, self.log, self.is_draining = app, routes, metrics, log, is_draining

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in self.routes else "other"  # bounded label cardinality
        status = 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.is_draining() and path != "/healthz":
                response = JSONResponse({"error": "server is shutting down; retry on another instance"}, status_code=503)
                await response(scope, receive, send_and_note)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.record(route, status, seconds)
            if route not in OPEN_ROUTES:
                self.log.event("request", method=scope["method"], route=route, status=status,
                               ms=round(seconds * 1000, 2))


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body over the limit of {limit} bytes")


class BodyLimit:
    """Pure ASGI middleware: refuse bodies over `limit` bytes, declared or streamed.

    A declared Content-Length over the limit is refused before a byte is read; a chunked
    body is counted as the app reads it, and reading past the limit raises a 413.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            status = 413 if declared.isdigit() else 400
            message = BodyTooLarge(self.limit).detail if status == 413 else "invalid Content-Length"
            return await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted_receive, send)

