"""`tunesmith assistant serve`: POST /v1/ask {"question": ...} -> the answer, its route
(template, retrieval, generation, handoff), confidence and sources; GET /healthz. API keys
and Host checks as for `serve` (serve/keyed.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from tunesmith.serve.keyed import identify, secured, service

MAX_QUESTION = 2_000  # characters


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=MAX_QUESTION)


@dataclass
class AssistantState:
    assistant: Any  # router.Assistant
    keys: Any


async def assistant_state(request: Request) -> AssistantState:
    return request.app.state.assistant


State = Annotated[AssistantState, Depends(assistant_state)]


async def caller(request: Request, state: State) -> str:
    return identify(request, state.keys)


Caller = Annotated[str, Depends(caller)]
router = APIRouter()


@router.post("/v1/ask")
async def ask(body: AskRequest, _: Caller, state: State) -> dict:
    return asdict(await run_in_threadpool(state.assistant.answer, body.question))


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


def create_app(assistant, keys, host: str = "127.0.0.1") -> FastAPI:
    app = service("tunesmith assistant", keys)
    app.state.assistant = AssistantState(assistant, keys)
    app.include_router(router)
    return secured(app, keys, host)
