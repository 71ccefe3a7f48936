"""`tunesmith serve RUN`: the run over HTTP (tunesmith.serve), with its settings typed in ServeSettings."""

from __future__ import annotations

from tunesmith.errors import UserError
from tunesmith.serve.settings import ServeSettings


def main(settings: ServeSettings) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("tunesmith serve needs FastAPI and uvicorn: pip install 'tunesmith[serve]'") from None
    from tunesmith.serve.server import serve

    serve(settings)
