"""The ASGI application: Starlette routes on one port, the error shape, and the hand-off of WebSocket scopes."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from actors.store import StorageUnavailableError, disk_refused
from gateway.errors import GatewayError, PayloadTooLargeError, RequestTimeoutError
from gateway.forwarded import ForwardedFor
from gateway.logs import redactor
from gateway.runtime import Runtime
from gateway.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("gateway.http")
access_log = logging.getLogger("gateway.access")

_STATUS_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


class JSON(Response):
    """A JSON response encoded with msgspec (faster than json, and it knows Structs), every known secret redacted
    (an upstream error may quote one); `redact=False` only for the one answer whose purpose is a secret."""

    media_type = "application/json"

    def __init__(self, content: Any = None, *args: Any, redact: bool = True, **kwargs: Any) -> None:
        self.redact = redact
        super().__init__(content, *args, **kwargs)

    def render(self, content: Any) -> bytes:
        body = msgspec.json.encode(content)
        return redactor.redact_bytes(body) if self.redact else body


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, details: Any = None
) -> JSON:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSON({"error": body}, status_code=status, headers=headers)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers, details=exc.details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, "HTTP_ERROR")
    return error_response(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))


async def _storage_error(request: Request, exc: Exception) -> Response:
    # Disk full, I/O error: nothing of this request was committed. Tell the client to retry, never a 500.
    log.error("storage refused %s %s: %s", request.method, request.url.path, exc)
    message = f"storage cannot take writes right now ({exc}); nothing was stored, retry later"
    return error_response(503, "STORAGE_UNAVAILABLE", message, headers={"Retry-After": "5"})


async def _os_error(request: Request, exc: Exception) -> Response:
    # A file written by a route (an upload) on a full, read-only or failing disk: the client should retry later.
    refused = disk_refused(exc)
    if refused is not None:
        return await _storage_error(request, refused)
    return await _internal_error(request, exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s: %r", request.method, request.url.path, exc, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal error; see the gateway log")


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def health(request: Request) -> Response:
    rt = runtime_of(request)
    body: dict[str, Any] = {
        "status": "ok",
        "uptime": round(rt.uptime(), 3),
        "connections": rt.connections,
        "version": rt.version,
    }
    reason = rt.store.degraded()
    if reason is not None:
        # Still serving (reads, streams, /health), but writes are refused: a monitor must see it.
        return JSON({**body, "status": "degraded", "reason": reason}, status_code=503)
    return JSON(body)


def all_routes() -> list[BaseRoute]:
    """Every route of the gateway. Each feature lives in one module of `gateway.routes` and is listed here."""
    from gateway import api, openapi, webui
    from gateway.ws import websocket_app

    routes: list[BaseRoute] = [Route("/health", health, methods=["GET"])]
    routes.append(WebSocketRoute("/ws", websocket_app))
    routes.extend(api.routes())  # the connector routes, `/files` and `/upload` included
    routes.extend(openapi.routes())
    routes.extend(webui.routes())  # only `/` and `/assets/*`: the SPA routes by URL hash, so it shadows nothing
    return routes


class BodyLimit:
    """Refuse bodies over the limit on every route: by Content-Length up front, else while they stream in."""

    def __init__(self, app: ASGIApp, *, default: int, larger: dict[str, int], body_timeout: float = 30.0) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.default = default
        self.larger = larger  # path -> its own limit (uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.default)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit():
                    await error_response(400, "INVALID_REQUEST", "bad Content-Length header")(scope, receive, send)
                    return
                if int(value) > limit:
                    too_big = error_response(413, "PAYLOAD_TOO_LARGE", f"the request body is larger than {limit} bytes")
                    await too_big(scope, receive, send)
                    return
        seen = 0
        complete = False

        async def counted() -> Message:
            nonlocal seen, complete
            if complete:
                return await receive()  # after the body: waiting for a disconnect (streams) is not timed
            # A body that stalls holds a task and a socket: bound every pause (hypercorn's own read timeout
            # would also cut idle WebSockets and server-sent-event streams, whose clients rightly send nothing).
            with trio.move_on_after(self.body_timeout):
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    complete = not message.get("more_body", False)
                    if seen > limit:
                        raise PayloadTooLargeError(f"the request body is larger than {limit} bytes")
                else:
                    complete = True
                return message
            raise RequestTimeoutError(f"the request body stalled for {self.body_timeout:g} s; send it without pauses")

        await self.app(scope, counted, send)


class AccessLog:
    """One `info` line per HTTP request: method, path, status, milliseconds (`log.access = false` turns it off).

    The path only: a query string may carry a token. On the hot path, so one level check and one line.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not access_log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            # A stream's time is how long it stayed open; 0 is a request cut off before any answer.
            ms = (time.perf_counter() - started) * 1000
            access_log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, ms)


def build_app(runtime: Runtime, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    """Build the app for a running gateway."""
    from gateway.routes.files import MULTIPART_SLACK

    config = runtime.config
    routes = all_routes()
    if not config.api.enabled:  # the E2E API seed's `api.enabled = false`: no /ws, /files, /upload
        routes = [r for r in routes if getattr(r, "path", None) not in ("/ws", "/files", "/upload")]
    routes.extend(extra_routes or [])
    middleware = [
        Middleware(
            BodyLimit,
            default=config.server.max_body_bytes,
            # The upload routes check the file's own size; the body adds the multipart framing around it.
            larger={
                "/api/files": config.limits.max_upload_bytes + MULTIPART_SLACK,
                "/upload": config.files.max_upload_bytes + MULTIPART_SLACK,
            },
            body_timeout=config.server.body_timeout,
        )
    ]
    if config.cors.enabled:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=config.cors.origins,
                allow_credentials=config.cors.credentials,
                # Every method a route answers (PATCH /api/models-json included), so no preflight is refused.
                allow_methods=sorted({m for r in routes for m in getattr(r, "methods", None) or ()} | {"OPTIONS"}),
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-Session-Id"],
                expose_headers=["Retry-After", "Content-Disposition"],
            ),
        )
    if config.log.access:
        middleware.insert(0, Middleware(AccessLog))  # outermost: CORS preflights and refusals are logged too
    if config.server.trusted_proxies:
        middleware.insert(0, Middleware(ForwardedFor, trusted=config.server.trusted_proxies))  # before anyone reads it
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            StorageUnavailableError: _storage_error,
            OSError: _os_error,
            Exception: _internal_error,
        },
    )
    app.state.runtime = runtime
    return app
