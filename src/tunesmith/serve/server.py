"""`tunesmith serve RUN`: refuse unsafe settings, load the run once, run uvicorn.

Shutdown is graceful: on SIGTERM/SIGINT the server stops accepting connections, answers
requests that arrive on open connections with 503 (and /readyz with 503, so a load
balancer stops routing here), lets in-flight requests finish, then exits.
"""

from __future__ import annotations

import json
import os

from tunesmith.compress.onnx_export import require_export
from tunesmith.errors import UserError
from tunesmith.runs import Run, open_finished
from tunesmith.serve.security import KeyRing
from tunesmith.serve.settings import ServeSettings, api_keys_from
from tunesmith.serve.telemetry import JsonLog

SETTINGS_ENV = "TUNESMITH_SERVE_SETTINGS"  # how worker processes receive the settings


def run_info(run: Run, backend: str = "auto") -> dict:
    """What /v1/model answers: the run's task, labels, model, backend (resolved from `backend`:
    a quantised run's own under auto), compression steps and test metrics."""
    from tunesmith.inference import resolve_backend
    from tunesmith.tasks import TASKS

    cfg = run.settings()
    info = {"run": run.path.name, "created": int(run.path.stat().st_mtime), "task": cfg.task, "labels": run.labels(),
            "base_model": cfg.resolved_model(), "method": cfg.method, "max_length": cfg.resolved_max_length(),
            "input": "text_pair" if cfg.text_pair_col else TASKS[cfg.task].input_kind,
            "backend": resolve_backend(run, backend),
            "compression": [step["kind"] for step in (run.compression() or {}).get("lineage", [])]}
    if run.metrics_file.is_file():
        metrics = json.loads(run.metrics_file.read_text())
        keep = ("accuracy", "macro_f1", "weighted_f1", "f1", "precision", "recall", "micro_f1", "subset_accuracy",
                "rmse", "mae", "pearson", "spearman", "count", "loss", "perplexity", "exact_match", "rouge_l",
                "reward_accuracy", "reward_margin", "logp_accuracy")
        info["metrics"] = {"test": {k: metrics["test"][k] for k in keep if k in metrics["test"]}}
        if metrics.get("baseline"):
            info["metrics"]["baseline"] = {k: metrics["baseline"][k] for k in keep if k in metrics["baseline"]}
    return info


def check_settings(settings: ServeSettings) -> tuple[Run, KeyRing]:
    """Every reason not to start, as one clear error, before anything loads."""
    from tunesmith.inference import resolve_backend

    run = open_finished(settings.run)
    if resolve_backend(run, settings.backend) == "onnx":  # a quantised run's own backend under auto
        require_export(run)
    keys = api_keys_from(settings)
    if settings.no_auth and keys:
        raise UserError("--no-auth given but API keys are set (TUNESMITH_API_KEYS or --api-keys-file); choose one")
    if not keys and not settings.no_auth and not settings.loopback:
        raise UserError(
            f"--host {settings.host} is reachable from the network: set TUNESMITH_API_KEYS (comma-separated) "
            "or --api-keys-file, or pass --no-auth to serve without authentication"
        )
    from tunesmith.tasks import TASKS, supporting

    task = run.settings().task
    if not TASKS[task].servable:
        raise UserError(f"{settings.run}: serving {task} runs is not supported yet (served: "
                        f"{', '.join(supporting('servable'))}); use `tunesmith predict` for batch predictions")
    log = JsonLog()
    return run, KeyRing(keys, load=lambda: api_keys_from(settings), watch=settings.api_keys_file,
                        on_error=lambda message: log.event("keys_reload_failed", 40, message=message))


def build_app(settings: ServeSettings):
    from tunesmith.inference import Predictor
    from tunesmith.serve.app import create_app

    import torch

    run, keys = check_settings(settings)
    # Measured on 2 cores: leaving the HTTP loop a core of its own (1 torch thread) cut
    # throughput by ~15%; inference, not parsing, is the bottleneck. So torch's default.
    if settings.threads:
        torch.set_num_threads(settings.threads)
    log = JsonLog()
    if settings.no_auth:
        log.event("auth_disabled", 30, message=f"serving {run.path} WITHOUT authentication on {settings.host}")
    elif not keys:
        log.event("auth_disabled", 30, message="no API keys set: serving without authentication on loopback only")
    return create_app(Predictor.from_run(run, settings.backend), settings, keys, run_info(run, settings.backend))


def app_from_env():
    """Factory for uvicorn worker processes (--workers N)."""
    return build_app(ServeSettings.model_validate_json(os.environ[SETTINGS_ENV]))


def uvicorn_options(settings: ServeSettings) -> dict:
    """uvicorn's settings. Its own proxy-header handling is off: by default it believes
    X-Forwarded-For from 127.0.0.1, so any local client could pick the address its failed-key
    limit counts against; --forwarded-allow-ips adds a proxy middleware that believes only
    the addresses named (app.py)."""
    return dict(host=settings.host, port=settings.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=30, limit_concurrency=2048, proxy_headers=False)


def serve(settings: ServeSettings) -> None:
    import uvicorn

    common = uvicorn_options(settings)
    if settings.workers > 1:
        check_settings(settings)  # fail fast here, not once per worker process after uvicorn starts
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        uvicorn.run("tunesmith.serve.server:app_from_env", factory=True, workers=settings.workers, **common)
        return
    app = build_app(settings)  # checks the settings first

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.draining = True  # requests on kept-alive connections now get 503
            super().handle_exit(sig, frame)

    _reload_keys_on_sighup(app)
    DrainingServer(uvicorn.Config(app, **common)).run()


def _reload_keys_on_sighup(app) -> None:
    """`kill -HUP PID` re-reads the keys (they are also re-read when the keys file changes)."""
    import signal

    state = app.state.served

    def reload(sig, frame):
        if state.keys.reload():
            state.log.event("keys_reloaded")

    if hasattr(signal, "SIGHUP"):  # not on Windows
        signal.signal(signal.SIGHUP, reload)
