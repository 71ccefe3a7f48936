"""The dashboard as a FastAPI app (routes.py has the routes), with `serve`'s security defaults:
without API keys it answers on loopback only, and only to a loopback Host header (a web page the
user opens cannot reach it through DNS rebinding); bodies over the limit are refused unread."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tunesmith.serve.keyed import secured
from tunesmith.ui.insights import Predictors
from tunesmith.ui.jobs import Jobs
from tunesmith.ui.routes import STATIC, DashboardState, Sessions, router


def create_app(root: Path, keys, host: str = "127.0.0.1", data_dirs: list[Path] | None = None) -> FastAPI:
    jobs = Jobs(root, data_dirs or [])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.stop_all()  # runs started here are interrupted (resumable), not left orphaned

    app = FastAPI(title="tunesmith ui", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.dashboard = DashboardState(Path(root), keys, jobs, Predictors(), Sessions())
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(ContentPolicy)
    return secured(app, keys, host)


# The dashboard's own pages: scripts and styles from itself only, never framed by another site.
# Inline style attributes stay allowed: the charts set colours through them.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class ContentPolicy:
    """Pure ASGI: a Content-Security-Policy (and nosniff) on every answer that has none of its own
    (a run's report brings its stricter, sandboxed one)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_policy(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", PAGE_POLICY.encode()))
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_policy)
