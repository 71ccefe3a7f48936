"""What the applications' small HTTP services (`monitor --serve`, `assistant serve`) share with
`serve`'s security defaults: the caller's API key, the body limit, and the Host allow-list that
a keyless service on loopback needs against DNS rebinding."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request

from tunesmith.errors import UserError
from tunesmith.serve.middleware import BodyLimit, HostAllowList
from tunesmith.serve.settings import LOOPBACK_HOSTS

MAX_BODY = 4 << 20  # bytes


def keys_from_env():
    """The KeyRing of TUNESMITH_API_KEYS (comma-separated), as `serve` reads it."""
    import os

    from tunesmith.serve.security import KeyRing

    return KeyRing([k.strip() for k in os.environ.get("TUNESMITH_API_KEYS", "").split(",") if k.strip()])


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
    identity = keys.identify(key) if key else None
    if identity is None:
        raise HTTPException(401, "give an API key: Authorization: Bearer KEY", headers={"WWW-Authenticate": "Bearer"})
    return identity


def secured(app: FastAPI, keys, host: str, max_body: int = MAX_BODY) -> FastAPI:
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(HostAllowList, hosts=["*"] if keys else sorted(LOOPBACK_HOSTS | {host}))
    return app
