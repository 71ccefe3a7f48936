"""What every request handler depends on: the served model's state, the caller's identity
(API key) and the rate limit. FastAPI dependencies, typed, so routes stay one line of work.

`async def` on purpose: they never block, and FastAPI runs a plain `def` dependency in its
thread pool, a thread hand-off per dependency per request (measured: the event loop then
spent more time switching threads than serving).
"""

from dataclasses import dataclass
from typing import Annotated, Optional

from fastapi import Depends, Request

from tunesmith.serve.batcher import MicroBatcher
from tunesmith.serve.security import KeyRing, RateLimiter
from tunesmith.serve.settings import ServeSettings
from tunesmith.serve.telemetry import JsonLog, Metrics


class ApiError(Exception):
    """An answer other than 200, as {"error": message, "field": field}."""

    def __init__(self, status: int, message: str, field: Optional[str] = None, headers: Optional[dict] = None):
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


@dataclass
class Served:
    """One served run: its predictor and task, and the machinery around them."""

    predictor: object  # anything with .predict(inputs, batch_size) and .labels (a Predictor)
    task: object
    settings: ServeSettings
    keys: KeyRing
    run_info: dict
    log: JsonLog
    metrics: Metrics
    limiter: RateLimiter
    batcher: MicroBatcher
    failed_auth: RateLimiter  # per client address: failed key attempts
    token_budget: RateLimiter  # per caller: prompt and answer tokens (generation runs)
    engine: Optional[object] = None  # the GenerationEngine of a generation run

    @property
    def pairs(self) -> bool:
        return self.run_info.get("input") == "text_pair"


async def served(request: Request) -> Served:
    return request.app.state.served


async def client_id(request: Request, state: Annotated[Served, Depends(served)]) -> str:
    """The caller: an API key's id, or (with auth off) its address."""
    if not state.keys:
        return request.client.host if request.client else "local"
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    identity = state.keys.identify(key) if key else None
    if identity is not None:
        return identity
    # A failed attempt counts against the address: guessing keys gets slow, a valid key never is.
    wait = state.failed_auth.check(request.client.host if request.client else "local")
    if wait > 0:
        raise ApiError(429, "too many failed API-key attempts from this address",
                       headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    if not key:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                       headers={"WWW-Authenticate": "Bearer"})
    raise ApiError(401, "API key not accepted", headers={"WWW-Authenticate": "Bearer"})  # RFC 7235: bad credentials are 401


async def rate_limited(client: Annotated[str, Depends(client_id)], state: Annotated[Served, Depends(served)]) -> str:
    wait = state.limiter.check(client)
    if wait > 0:
        raise ApiError(429, f"rate limit of {state.settings.rate_limit:g} requests/s exceeded",
                       headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    return client


State = Annotated[Served, Depends(served)]
Caller = Annotated[str, Depends(rate_limited)]
