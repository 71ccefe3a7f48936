"""`tunesmith serve`: a run behind an HTTP API (FastAPI + uvicorn).

    settings.py   ServeSettings: every limit and switch, from flags or TUNESMITH_* variables
    security.py   API keys (hashed, constant-time), per-key rate limit, PII masking for logs
    batcher.py    dynamic micro-batching: requests within a few ms run as one batch
    telemetry.py  Prometheus metrics and JSON-line logs
    app.py        the routes (thin), built by create_app(predictor, settings)
    server.py     the command: checks, then uvicorn with graceful shutdown
"""
