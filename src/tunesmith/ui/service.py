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
from tunesmith.ui.routes import STATIC, DashboardState, router


def create_app(root: Path, keys, host: str = "127.0.0.1", data_dirs: list[Path] | None = None) -> FastAPI:
    jobs = Jobs(root, data_dirs or [])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.stop_all()  # runs started here are interrupted (resumable), not left orphaned

    app = FastAPI(title="tunesmith ui", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.dashboard = DashboardState(Path(root), keys, jobs, Predictors())
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return secured(app, keys, host)
