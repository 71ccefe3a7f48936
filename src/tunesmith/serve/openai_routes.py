"""OpenAI-compatible routes: completions and chat for generation runs (causal-lm, preference),
embeddings for sentence-embedding runs. Any OpenAI client works against the served run with
`base_url="http://host:port/v1"` and an API key. Same keys, limits and metrics as
/v1/predict; the work is in openai_handlers.py."""

from fastapi import APIRouter, Request

from tunesmith.serve import openai_handlers as handlers
from tunesmith.serve.dependencies import Caller, State
from tunesmith.serve.openai_schemas import (ChatRequest, ChatResponse, CompletionRequest, CompletionResponse,
                                            EmbeddingRequest, EmbeddingResponse, ModelList)

router = APIRouter()  # generation runs
embeddings_router = APIRouter()  # sentence-embedding runs


@embeddings_router.get("/v1/models", response_model=ModelList)
async def embedding_models(client: Caller, state: State) -> dict:
    return handlers.models(state)


@embeddings_router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def embeddings(body: EmbeddingRequest, client: Caller, state: State):
    return await handlers.embeddings(state, body)


@router.get("/v1/models", response_model=ModelList)
async def models(client: Caller, state: State) -> dict:
    return handlers.models(state)


@router.post("/v1/completions", response_model=CompletionResponse)
async def completions(request: Request, body: CompletionRequest, client: Caller, state: State):
    return await handlers.completions(state, request, body, client)


@router.post("/v1/chat/completions", response_model=ChatResponse)
async def chat(request: Request, body: ChatRequest, client: Caller, state: State):
    return await handlers.chat(state, request, body, client)
