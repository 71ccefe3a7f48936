"""Pure ASGI middleware (Starlette's BaseHTTPMiddleware costs about 1 ms a request): request
metrics and access log, the body limit, and multipart image uploads turned into JSON."""

import json
import logging
import re
import time
import uuid

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.serve.telemetry import REQUEST_ID, JsonLog, Metrics

OPEN_ROUTES = {"/healthz", "/readyz", "/openapi.json"}
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # an id a client may choose (never raw text in logs)


class MultipartImages:
    """Pure ASGI middleware for image runs: a multipart/form-data POST to /v1/predict (one or
    more files in the field `inputs`, or any file fields) becomes the JSON request
    {"inputs": [base64, ...]}, so the route, its limits and its errors stay the same."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        content_type = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
        if scope["type"] != "http" or scope["path"] != "/v1/predict" or not content_type.startswith("multipart/form-data"):
            return await self.app(scope, receive, send)
        import base64

        from starlette.datastructures import UploadFile
        from starlette.requests import Request

        try:
            form = await Request(scope, receive).form()
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            encoded = [base64.b64encode(await f.read()).decode() for f in files]
        except StarletteHTTPException:
            raise
        except Exception:
            return await JSONResponse({"error": "inputs: not a readable multipart/form-data body", "field": "inputs"},
                                      status_code=422)(scope, receive, send)
        body = json.dumps({"inputs": encoded}).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        sent = False

        async def json_receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": headers}, json_receive, send)


class Observe:
    """Pure ASGI middleware: 503 while draining; request metrics and the JSON access log; the
    request id (the client's `X-Request-ID` when it is a plain token, else a new one), echoed in
    the response and in every log line written while the request runs."""

    def __init__(self, app, routes: set, metrics: Metrics, log: JsonLog, is_draining):
        self.app, self.routes, self.metrics, self.log, self.is_draining = app, routes, metrics, log, is_draining

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in self.routes else "other"  # bounded label cardinality
        status, responded = 500, False
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)

        async def send_and_note(message):
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message = {**message, "headers": [*message.get("headers", []),
                                                   (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            if self.is_draining() and path != "/healthz":
                response = JSONResponse({"error": "server is shutting down; retry on another instance"}, status_code=503)
                await response(scope, receive, send_and_note)
            else:
                await self.app(scope, receive, send_and_note)
        except StarletteHTTPException as exc:
            # Raised outside the routes, where FastAPI's handlers do not reach (a chunked
            # multipart upload read past the body limit): its own status, not a 500.
            if not responded:
                await JSONResponse({"error": exc.detail}, status_code=exc.status_code)(scope, receive, send_and_note)
        except Exception as exc:
            # An error no handler took. Let through, Starlette's outermost middleware would
            # answer 500 and then re-raise it for the server to log a traceback, which can hold
            # request text: answer here and log one structured line instead.
            self.log.event("error", logging.ERROR, route=route, error=type(exc).__name__)
            if not responded:
                await JSONResponse({"error": "internal error"}, status_code=500)(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.record(route, status, seconds)
            if route not in OPEN_ROUTES:
                self.log.event("request", method=scope["method"], route=route, status=status,
                               ms=round(seconds * 1000, 2))
            REQUEST_ID.reset(token)


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body over the limit of {limit} bytes")


class BodyLimit:
    """Pure ASGI middleware: refuse bodies over `limit` bytes, declared or streamed.

    A declared Content-Length over the limit is refused before a byte is read; a chunked
    body is counted as the app reads it, and reading past the limit raises a 413.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            status = 413 if declared.isdigit() else 400
            message = BodyTooLarge(self.limit).detail if status == 413 else "invalid Content-Length"
            return await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted_receive, send)


class HostAllowList:
    """Pure ASGI middleware: 400 unless the Host header is one of `hosts` (`*` any, `*.domain`
    any subdomain). A keyless server on loopback is otherwise reachable from any web page the
    user opens: DNS rebinding points the page's own name at 127.0.0.1, and the browser sends
    that name as Host."""

    def __init__(self, app, hosts: list[str]):
        self.app = app
        self.any = "*" in hosts
        self.exact = {h.lower() for h in hosts if not h.startswith("*")}
        self.suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))

    def allowed(self, host_header: str) -> bool:
        host = host_header.strip().lower()
        if host.startswith("["):  # [::1]:8000
            host = host[: host.find("]") + 1]
        elif host.count(":") == 1:
            host = host.split(":")[0]
        return host in self.exact or (bool(self.suffixes) and host.endswith(self.suffixes))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.any:
            return await self.app(scope, receive, send)
        host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
        if not self.allowed(host):
            return await JSONResponse({"error": "Host header not allowed (see --allowed-hosts)", "field": "Host"},
                                      status_code=400)(scope, receive, send)
        await self.app(scope, receive, send)
