"""The routes: one line of work each; auth and limits are dependencies (dependencies.py), the
work is in handlers.py."""

from typing import Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from tunesmith.serve import handlers
from tunesmith.serve.dependencies import Caller, State
from tunesmith.serve.schemas import (PredictRequest, RerankRequest, RerankResponse, ScoreRequest, ScoreResponse,
                                     response_schema)
from tunesmith.tasks import TASKS

router = APIRouter()
rerank_router = APIRouter()  # runs of tasks that declare `rerank`
score_router = APIRouter()  # runs of tasks that declare `scores_answers` (reward models)

# One answer of any servable task, as each task declares it (documented in /openapi.json).
Output = Union[tuple(dict.fromkeys(response_schema(task) for task in TASKS.values() if task.servable))]


@router.post("/v1/predict", response_model=list[Output])
async def predict(request: Request, body: PredictRequest, client: Caller, state: State) -> JSONResponse:
    return await handlers.predict(state, request, body, client)


@rerank_router.post("/v1/rerank", response_model=RerankResponse)
async def rerank(body: RerankRequest, client: Caller, state: State) -> dict:
    return await handlers.rerank(state, body)


@score_router.post("/v1/score", response_model=ScoreResponse)
async def score(body: ScoreRequest, client: Caller, state: State) -> dict:
    return await handlers.score(state, body)


@router.get("/v1/model")
async def model(client: Caller, state: State) -> dict:
    return state.run_info


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    ready = request.app.state.ready and not request.app.state.draining
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(client: Caller, state: State) -> str:
    return state.metrics.render()
