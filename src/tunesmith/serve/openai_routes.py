"""OpenAI-compatible routes, mounted for generation runs (causal-lm, preference): any OpenAI
client works against the served run with `base_url="http://host:port/v1"` and an API key.
Same keys, limits and metrics as /v1/predict; the work is in openai_handlers.py."""

from fastapi import APIRouter, Request

from tunesmith.serve import openai_handlers as handlers
from tunesmith.serve.dependencies import Caller, State
from tunesmith.serve.openai_schemas import ChatRequest, ChatResponse, CompletionRequest, CompletionResponse, ModelList

router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
async def models(client: Caller, state: State) -> dict:
    return handlers.models(state)


@router.post("/v1/completions", response_model=CompletionResponse)
async def completions(request: Request, body: CompletionRequest, client: Caller, state: State):
    return await handlers.completions(state, request, body, client)


@router.post("/v1/chat/completions", response_model=ChatResponse)
async def chat(request: Request, body: ChatRequest, client: Caller, state: State):
    return await handlers.chat(state, request, body, client)
