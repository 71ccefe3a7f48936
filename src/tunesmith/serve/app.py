"""The HTTP API. Routes stay thin: auth and limits are dependencies and middleware,
inference is the micro-batcher's job, and the shapes are pydantic models (so /openapi.json
documents them).

    POST /v1/predict   {"inputs": "text" | ["text", ...], "parameters": {"top_k": 3}}
                       (pair runs: {"text": ..., "text_pair": ...} per input; the answer's shape is
                       the task's: label + scores, score, labels + scores, or entities)
    GET  /v1/model     task, labels, base model, metrics of the run
    GET  /healthz      the process is up (no auth: for liveness probes)
    GET  /readyz       the model is loaded and warm, and not draining (no auth)
    GET  /metrics      Prometheus text format
    GET  /openapi.json the schema
"""

# No `from __future__ import annotations` here: FastAPI resolves the dependency aliases
# defined inside create_app from real annotation objects.

import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Optional, Union

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
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


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: Optional[str] = None, headers: Optional[dict] = None):
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


def create_app(predictor, settings: ServeSettings, keys: KeyRing, run_info: dict) -> FastAPI:
    """An app serving `predictor` (anything with .predict(inputs) and .labels) of the run's task."""
    from tunesmith.tasks import TASKS

    task = TASKS[run_info.get("task", "text-classification")]
    pairs = run_info.get("input") == "text_pair"
    log = JsonLog()
    metrics = Metrics({"task": run_info.get("task", ""), "base_model": run_info.get("base_model", ""),
                       "run": run_info.get("run", ""), "backend": settings.backend})
    limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    batcher = MicroBatcher(lambda inputs: task.output_rows(predictor.predict(inputs)), settings.batch_max_size, settings.batch_max_wait_ms,
                           on_batch=metrics.batch_size.observe)
    metrics.queue_depth = lambda: batcher.depth

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        # The first call pays one-off costs; do it before ready.
        await batcher.submit([task.serve_input({"text": "warm-up", "text_pair": "warm-up"} if pairs else "warm-up", pairs)])
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

    def client_id(request: Request) -> str:
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

    def rate_limited(client: Annotated[str, Depends(client_id)]) -> str:
        wait = limiter.check(client)
        if wait > 0:
            raise ApiError(429, f"rate limit of {settings.rate_limit:g} requests/s exceeded",
                           headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        return client

    Caller = Annotated[str, Depends(rate_limited)]

    # --- routes ------------------------------------------------------------------------

    Output = Union[ClassificationOutput, RegressionOutput, MultiLabelOutput, EntitiesOutput]

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
                if len(text) > settings.max_text_chars:
                    raise ApiError(422, f"inputs[{i}]: {len(text)} characters, the limit is {settings.max_text_chars}",
                                   f"inputs[{i}]")
            try:
                inputs.append(task.serve_input(value, pairs))
            except ValueError as exc:
                raise ApiError(422, f"inputs[{i}]: {exc}", f"inputs[{i}]") from None
            raw.append(value)
        if settings.log_text:
            texts = [t for v in raw for t in (v.values() if isinstance(v, dict) else [v])]
            log.event("predict_text", client=client, texts=[mask_pii(t) for t in texts])
        rows = await batcher.submit(inputs)
        # Built here and returned as-is: re-validating our own output through the
        # response_model would cost more than the serialisation (the model documents it).
        top_k = body.parameters.top_k
        return JSONResponse([task.serve_output(v, row, predictor.labels, top_k) for v, row in zip(raw, rows)])

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

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Observe, routes={route.path for route in app.routes}, metrics=metrics, log=log,
                       is_draining=lambda: app.state.draining)

    app.state.metrics = metrics
    app.state.batcher = batcher
    return app


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

