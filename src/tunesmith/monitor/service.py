"""The monitor as a service: the FastAPI app around a Pipeline (routes.py has the routes).

The same security defaults as `serve`: without API keys it answers on loopback only, and only
to a loopback Host header (a web page the user opens cannot reach it through DNS rebinding);
request bodies over the limit are refused before they are read.
"""

from __future__ import annotations

from fastapi import FastAPI

from tunesmith.monitor.routes import MonitorState, router
from tunesmith.serve.keyed import secured, service


def create_app(pipeline, keys, window_s: float, host: str = "127.0.0.1") -> FastAPI:
    app = service("tunesmith monitor", keys)
    app.state.monitor = MonitorState(pipeline, keys, window_s)
    app.include_router(router)
    return secured(app, keys, host)
