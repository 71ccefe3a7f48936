"""What the applications' small HTTP services (`monitor --serve`, `assistant serve`, `ui`) share
with `serve`'s security defaults: keys of at least 16 characters, the caller's API key with a
limit on failed attempts per address, the body limit, the Host allow-list that a keyless
service on loopback needs against DNS rebinding, and no schema pages on a keyed service."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request

from tunesmith.errors import UserError
from tunesmith.serve.middleware import BodyLimit, HostAllowList
from tunesmith.serve.settings import LOOPBACK_HOSTS

MAX_BODY = 4 << 20  # bytes


def keys_from_env():
    """The KeyRing of TUNESMITH_API_KEYS (comma-separated), with `serve`'s rules (16 characters
    at least), and a limit on failed attempts per client address."""
    from tunesmith.serve.security import KeyRing, RateLimiter
    from tunesmith.serve.settings import ServeSettings, api_keys_from

    ring = KeyRing(api_keys_from(ServeSettings(run="-")))
    ring.failures = RateLimiter(FAILURES_PER_S, FAILURE_BURST)
    return ring


FAILURES_PER_S, FAILURE_BURST = 1.0, 10  # failed key attempts per client address: serve's defaults


def refuse_open_host(host: str, keys, verb: str) -> None:
    if host not in LOOPBACK_HOSTS and not keys:
        raise UserError(f"--host {host}: off this machine {verb} needs API keys; set TUNESMITH_API_KEYS "
                        "(comma-separated), or keep the default --host 127.0.0.1")


def identify(request: Request, keys) -> str:
    """The caller's key id; 401 without a valid `Authorization: Bearer KEY` when keys are set."""
    if not keys:
        return "local"
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else ""
    return check_key(request, keys, key)


def check_key(request: Request, keys, key: str) -> str:
    """The id of `key`; a failure counts against the caller's address, and past the limit is
    a 429 (guessing keys gets slow; a valid key never is)."""
    identity = keys.identify(key) if key else None
    if identity is not None:
        return identity
    limiter = getattr(keys, "failures", None)
    if limiter is not None:
        wait = limiter.check(request.client.host if request.client else "local")
        if wait > 0:
            raise HTTPException(429, "too many failed API-key attempts from this address",
                                headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    raise HTTPException(401, "give an API key: Authorization: Bearer KEY", headers={"WWW-Authenticate": "Bearer"})


def run_server(app, host: str, port: int) -> None:
    """uvicorn without its proxy headers: it would believe X-Forwarded-For from 127.0.0.1, and a
    local client could then pick the address its failed-key limit counts against."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)


def service(title: str, keys, **extra) -> FastAPI:
    """A FastAPI app whose schema pages (/openapi.json, /docs, /redoc) are off when keys are
    set: they are open routes, and a keyed service says nothing to a caller without a key."""
    if keys:
        extra.update(openapi_url=None, docs_url=None, redoc_url=None)
    return FastAPI(title=title, version="1", **extra)


def secured(app: FastAPI, keys, host: str, max_body: int = MAX_BODY) -> FastAPI:
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(HostAllowList, hosts=["*"] if keys else sorted(LOOPBACK_HOSTS | {host}))
    return app
