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

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.serve.batcher import MicroBatcher
from tunesmith.serve.dependencies import ApiError, Served, client_id
from tunesmith.serve.middleware import BodyLimit, HostAllowList, MultipartImages, Observe
from tunesmith.serve.openai_routes import embeddings_router
from tunesmith.serve.openai_routes import router as openai_router
from tunesmith.serve.routes import rerank_router, router, score_router
from tunesmith.serve.security import KeyRing, RateLimiter
from tunesmith.serve.settings import ServeSettings
from tunesmith.serve.telemetry import JsonLog, Metrics


def create_app(predictor, settings: ServeSettings, keys: KeyRing, run_info: dict) -> FastAPI:
    """An app serving `predictor` (anything with .predict(inputs) and .labels) of the run's task."""
    state = _served(predictor, settings, keys, run_info)
    # With keys, the schema is behind the key like every other route but the probes.
    app = FastAPI(title="tunesmith", version="1", lifespan=_lifespan(state), docs_url=None, redoc_url=None,
                  openapi_url=None if keys else "/openapi.json")
    if keys:
        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(client_id)])
        def keyed_schema() -> dict:
            return app.openapi()

    app.state.served = state
    app.state.ready = False
    app.state.draining = False
    app.include_router(router)
    routers = [router]
    if state.task.generative and not state.predictor.tokenizer.encoder_decoder:  # chat routes: decoder-only models
        app.include_router(openai_router)
        routers.append(openai_router)
    if state.task.answer == "embedding":
        app.include_router(embeddings_router)
        routers.append(embeddings_router)
    if state.task.rerank:
        app.include_router(rerank_router)
        routers.append(rerank_router)
    if state.task.scores_answers:
        app.include_router(score_router)
        routers.append(score_router)
    _handle_errors(app)
    # Middleware, outside in: proxy headers (from trusted proxies only) -> Observe (draining,
    # metrics, access log) -> Host allow-list -> BodyLimit -> routes.
    if state.task.serves_images:
        app.add_middleware(MultipartImages)  # inside BodyLimit: the upload is counted first
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(HostAllowList, hosts=settings.hosts(keyed=bool(keys)))
    routes = {route.path for r in routers for route in r.routes} | {app.openapi_url}  # metric labels: known only
    app.add_middleware(Observe, routes=routes, metrics=state.metrics, log=state.log,
                       is_draining=lambda: app.state.draining)
    if settings.forwarded_allow_ips:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=",".join(settings.forwarded_allow_ips))
    app.state.metrics = state.metrics
    app.state.batcher = state.batcher
    return app


def _served(predictor, settings: ServeSettings, keys: KeyRing, run_info: dict) -> Served:
    from tunesmith.tasks import TASKS

    task = TASKS[run_info.get("task", "text-classification")]
    metrics = Metrics({"task": run_info.get("task", ""), "base_model": run_info.get("base_model", ""),
                       "run": run_info.get("run", ""), "backend": run_info.get("backend", settings.backend)})
    # A micro-batch gathers whatever requests arrived together, short and long mixed: run as one
    # forward pass, every text would be padded to the longest. The predictor sorts it by length
    # and runs slices of `forward_batch_size` texts instead (random groups of 32 tweets on 2
    # cores: 84 texts/s as one pass, 139 in slices of 8; bench/onnx_predict.py).
    batcher = MicroBatcher(lambda inputs: task.output_rows(predictor.predict(inputs, settings.forward_batch_size)),
                           settings.batch_max_size, settings.batch_max_wait_ms, on_batch=metrics.batch_size.observe,
                           max_queue=settings.max_queue)
    metrics.queue_depth = lambda: batcher.depth
    engine = _engine(predictor, settings, metrics) if task.generative else None
    return Served(predictor, task, settings, keys, run_info, JsonLog(), metrics,
                  RateLimiter(settings.rate_limit, settings.rate_burst), batcher,
                  RateLimiter(settings.auth_failures_per_s, 10),
                  RateLimiter(settings.tokens_per_minute / 60.0, settings.tokens_per_minute), engine)


def _engine(predictor, settings: ServeSettings, metrics: Metrics):
    from tunesmith.serve.batch_engine import BatchEngine
    from tunesmith.serve.engine import GenerationEngine, supports

    model = predictor.model
    if predictor.tokenizer.encoder_decoder:  # summarization, translation with T5, BART, Marian, NLLB
        engine = BatchEngine(model, predictor.tokenizer, settings.generation_batch, settings.max_queue)
    else:
        # A model whose cache this engine cannot merge still gets deadlines and cancellation,
        # one answer at a time.
        batch = settings.generation_batch if supports(model) else 1
        engine = GenerationEngine(model, predictor.tokenizer.tokenizer, max_batch=batch, max_waiting=settings.max_queue)
    metrics.generation_waiting = lambda: engine.waiting
    metrics.generation_active = lambda: engine.active
    return engine


def _lifespan(state: Served):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher.start()
        if state.engine is not None:
            state.engine.start()
        # The first call pays one-off costs; do it before ready.
        await state.batcher.submit([state.task.serve_input(_warm_up_input(state.task, state.pairs), state.pairs)])
        app.state.ready = True
        state.log.event("ready", run=state.run_info.get("run"), auth=bool(state.keys), workers=state.settings.workers)
        yield
        app.state.draining = True
        await state.batcher.stop()
        if state.engine is not None:
            state.engine.stop()
        state.log.event("stopped")

    return lifespan


def _handle_errors(app: FastAPI) -> None:
    """One JSON shape for every error, {"error": ..., "field": ...}. An error no handler takes
    is answered (500, "internal error") and logged in one line by the Observe middleware."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(request, exc.status, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        field = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return _error(request, 422, f"{field}: {first['msg']}", field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)



OPENAI_PATHS = {route.path for r in (openai_router, embeddings_router) for route in r.routes}
OPENAI_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                      429: "rate_limit_error", 503: "server_error", 504: "timeout"}


def _error(request: Request, status: int, message: str, field=None, headers=None) -> JSONResponse:
    """{"error": message, "field": field}; on the OpenAI-compatible routes, OpenAI's shape
    {"error": {"message", "type", "param", "code"}}, which its clients read."""
    if request.url.path in OPENAI_PATHS:
        body = {"error": {"message": message, "type": OPENAI_ERROR_TYPES.get(status, "invalid_request_error"),
                          "param": field, "code": None}}
    else:
        body = {"error": message} | ({"field": field} if field else {})
    return JSONResponse(body, status_code=status, headers=headers)


def _warm_up_input(task, pairs: bool):
    if task.serves_images:
        import base64
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()
    return task.sample_input("warm-up", pairs)
