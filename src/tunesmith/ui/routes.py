"""The dashboard's HTTP API and pages: routes, their dependencies and handlers.

Pages (static HTML that calls the API):  GET /  (runs)   GET /run?id=RUN   GET /compare?ids=A,B
    GET  /api/runs                 every run's summary row
    GET  /api/run?id=RUN           one run: settings, curves, test results, baseline, ending
    GET  /api/run/report?id=RUN    its report.html
    GET  /api/run/events?id=RUN    server-sent events: the run's history rows, live while it trains
    GET  /api/run/errors?id=RUN    the test split's most confident wrong predictions
    POST /api/run/predict          {"id", "text", "text_pair"?}: the run's answer (try it)
    POST /api/run/resume           {"id"}: continue an interrupted run
    GET  /api/choices              data files (allowed folders and built-ins), tasks, methods
    GET  /api/jobs                 training runs started here;  POST /api/jobs starts one
    POST /api/jobs/{id}/cancel     interrupt it (its checkpoint is kept: resumable)
    POST /api/login                {"key"}: with API keys set, a browser signs in once (a cookie)
    GET  /healthz

Every route but /healthz and the login needs a key when keys are set (TUNESMITH_API_KEYS):
`Authorization: Bearer KEY` or the sign-in cookie. A POST whose Origin is not this server is
refused (a page on another site cannot start training here).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from tunesmith.errors import UserError
from tunesmith.runs import Run, status
from tunesmith.serve.keyed import check_key, identify
from tunesmith.ui import catalog, insights
from tunesmith.ui.jobs import Jobs

STATIC = Path(__file__).parent / "static"
COOKIE = "tunesmith_session"
SESSION_S = 12 * 3600.0  # a working day; then the key is asked for again
POLL_S = 0.5  # how often a live curve looks for new history rows
MAX_TEXT = 20_000


@dataclass
class DashboardState:
    root: Path
    keys: Any  # serve.security.KeyRing
    jobs: Jobs
    predictors: insights.Predictors
    sessions: "Sessions" = None


class Sessions:
    """Sign-in sessions: the cookie holds a random token, never the key, and a token ends after
    SESSION_S (or when the dashboard restarts)."""

    def __init__(self, clock=time.monotonic):
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (key id, expiry)
        self.clock = clock

    def start(self, identity: str) -> str:
        now = self.clock()
        self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}  # ended ones go
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (identity, now + SESSION_S)
        return token

    def identify(self, token: str) -> str | None:
        held = self._tokens.get(token)
        return held[0] if held is not None and held[1] > self.clock() else None


# ---- dependencies ---------------------------------------------------------------------------
def dashboard(request: Request) -> DashboardState:
    return request.app.state.dashboard


def caller(request: Request, state: Annotated[DashboardState, Depends(dashboard)]) -> str:
    """The caller's key id: a bearer key, or the session a browser got at sign-in."""
    if state.keys and COOKIE in request.cookies and "authorization" not in request.headers:
        identity = state.sessions.identify(request.cookies[COOKIE])
        if identity is None:
            raise HTTPException(401, "sign in again: the session has ended")
        return identity
    return identify(request, state.keys)


def same_origin(request: Request) -> None:
    """A browser names the page's origin on a POST: it must be this server."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "cross-site requests are refused")


def the_run(state: Annotated[DashboardState, Depends(dashboard)], id: Annotated[str, Query(max_length=500)]) -> Run:
    try:
        return catalog.open_run(state.root, id)
    except UserError as exc:
        raise HTTPException(404, str(exc)) from None


Caller = Annotated[str, Depends(caller)]
State = Annotated[DashboardState, Depends(dashboard)]
TheRun = Annotated[Run, Depends(the_run)]
router = APIRouter()


# ---- pages ----------------------------------------------------------------------------------
@router.get("/", include_in_schema=False)
def index_page():
    return FileResponse(STATIC / "index.html")


@router.get("/run", include_in_schema=False)
def run_page():
    return FileResponse(STATIC / "run.html")


@router.get("/compare", include_in_schema=False)
def compare_page():
    return FileResponse(STATIC / "compare.html")


@router.get("/healthz")
def healthz():
    return {"ok": True}


# ---- runs -----------------------------------------------------------------------------------
@router.get("/api/runs")
def list_runs(state: State, _: Caller):
    return {"root": str(state.root), "runs": [catalog.summary(state.root, run) for run in catalog.find_runs(state.root)]}


@router.get("/api/run")
def show_run(state: State, run: TheRun, _: Caller):
    return catalog.details(state.root, run)


# A run's report comes from its folder, which may be someone else's: served sandboxed (a unique
# origin, no script), so nothing in it can act with the dashboard's session.
REPORT_POLICY = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@router.get("/api/run/report", include_in_schema=False)
def run_report(state: State, run: TheRun, _: Caller):
    report = catalog.readable(state.root, run.report_file)
    if report is None:
        raise HTTPException(404, "the run has no report yet (it is written when the run finishes)")
    return FileResponse(report, media_type="text/html", headers={"Content-Security-Policy": REPORT_POLICY})


@router.get("/api/run/events")
async def run_events(request: Request, state: State, run: TheRun, _: Caller):
    """Every history row as an event, then new ones as the run writes them; `end` when it stops."""
    return StreamingResponse(_history_events(request, state.root, run), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


async def _history_events(request: Request, root: Path, run: Run):
    offset, quiet_polls, partial = 0, 0, b""
    while not await request.is_disconnected():
        chunk = catalog.read_from(root, run.history_file, offset)
        offset += len(chunk)
        *lines, partial = (partial + chunk).split(b"\n")  # a line still being written waits
        for line in lines:
            if line.strip():
                yield f"data: {line.decode('utf-8', errors='replace')}\n\n"
        if status(run) != "running":
            quiet_polls = quiet_polls + 1 if not lines else 0
            if quiet_polls >= 2:  # stopped, and nothing more came: the curve is complete
                yield f"event: end\ndata: {json.dumps({'status': status(run)})}\n\n"
                return
        await asyncio.sleep(POLL_S)


@router.get("/api/run/errors")
async def run_errors(state: State, run: TheRun, _: Caller):
    return await _answer(insights.confident_errors, state.predictors, run)


class TryIt(BaseModel):
    id: str = Field(max_length=500)
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    text_pair: Optional[str] = Field(None, max_length=MAX_TEXT)


@router.post("/api/run/predict", dependencies=[Depends(same_origin)])
async def try_it(body: TryIt, state: State, _: Caller):
    run = the_run(state, body.id)
    return await _answer(insights.try_it, state.predictors, run, body.text, body.text_pair)


class RunId(BaseModel):
    id: str = Field(max_length=500)


@router.post("/api/run/resume", dependencies=[Depends(same_origin)])
def resume_run(body: RunId, state: State, _: Caller):
    run = the_run(state, body.id)
    if status(run) not in ("interrupted", "failed"):
        raise HTTPException(409, f"{body.id} is {status(run)}; only an interrupted or failed run resumes")
    return _job_or_error(state.jobs.resume, body.id)


# ---- starting training ----------------------------------------------------------------------
@router.get("/api/choices")
def choices(state: State, _: Caller):
    from tunesmith.methods import METHODS
    from tunesmith.tasks import TASKS

    return {"data": state.jobs.data_files(), "tasks": sorted(TASKS), "methods": sorted(METHODS)}


class NewRun(BaseModel):
    data: str = Field(max_length=1000)
    task: str = Field("text-classification", max_length=60)
    method: str = Field("lora", max_length=60)
    name: str = Field(max_length=80)
    model: Optional[str] = Field(None, max_length=1000)
    epochs: Optional[float] = Field(None, gt=0, le=100)
    lr: Optional[float] = Field(None, gt=0, lt=1)
    batch_size: Optional[int] = Field(None, gt=0, le=4096)
    max_length: Optional[int] = Field(None, gt=0, le=8192)


@router.get("/api/jobs")
def list_jobs(state: State, _: Caller):
    return [job.view() for job in state.jobs.jobs.values()]


@router.post("/api/jobs", dependencies=[Depends(same_origin)])
def start_job(body: NewRun, state: State, _: Caller):
    from tunesmith.methods import METHODS
    from tunesmith.tasks import TASKS

    if body.task not in TASKS or body.method not in METHODS:
        raise HTTPException(422, f"task is one of {', '.join(sorted(TASKS))}; method one of {', '.join(sorted(METHODS))}")
    settings = body.model_dump(exclude={"data", "task", "method", "name"})
    return _job_or_error(state.jobs.start, body.data, body.task, body.method, body.name, settings)


@router.post("/api/jobs/{job_id}/cancel", dependencies=[Depends(same_origin)])
def cancel_job(job_id: int, state: State, _: Caller):
    return _job_or_error(state.jobs.cancel, job_id)


class Login(BaseModel):
    key: str = Field(max_length=500)


@router.post("/api/login", dependencies=[Depends(same_origin)])
def login(body: Login, request: Request, state: State):
    if not state.keys:
        return JSONResponse({"ok": True})  # nothing to sign in to
    try:
        identity = check_key(request, state.keys, body.key)  # failures count against the address
    except HTTPException as exc:
        raise HTTPException(exc.status_code, "that key is not valid" if exc.status_code == 401 else exc.detail,
                            headers=exc.headers) from None
    answer = JSONResponse({"ok": True})
    answer.set_cookie(COOKIE, state.sessions.start(identity), httponly=True, samesite="strict",
                      secure=request.url.scheme == "https", max_age=int(SESSION_S))
    return answer


# ---- handlers -------------------------------------------------------------------------------
async def _answer(handler, *args):
    """A blocking handler (a model loads, predicts) off the event loop; bad input is a 422."""
    try:
        return await run_in_threadpool(handler, *args)
    except (UserError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None


def _job_or_error(action, *args):
    try:
        return action(*args).view()
    except UserError as exc:
        raise HTTPException(422, str(exc)) from None
