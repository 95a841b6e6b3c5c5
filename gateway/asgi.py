"""The ASGI application: Starlette routes on one port, the error shape, and the hand-off of WebSocket scopes."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from gateway.errors import GatewayError
from gateway.runtime import Runtime

log = logging.getLogger("gateway.http")

_STATUS_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


class JSON(Response):
    """A JSON response encoded with msgspec (faster than json, and it knows Structs)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


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


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s: %r", request.method, request.url.path, exc, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal error; see the gateway log")


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def health(request: Request) -> Response:
    rt = runtime_of(request)
    return JSON(
        {
            "status": "ok",
            "uptime": round(rt.uptime(), 3),
            "connections": rt.connections,
            "version": rt.version,
        }
    )


def all_routes() -> list[BaseRoute]:
    """Every route of the gateway. Each feature lives in one module of `gateway.routes` and is listed here."""
    from gateway.routes import connectors, status
    from gateway.routes.files import routes as file_routes
    from gateway.ws import websocket_app

    routes: list[BaseRoute] = [Route("/health", health, methods=["GET"])]
    routes.append(WebSocketRoute("/ws", websocket_app))
    routes.extend(file_routes())
    routes.extend(connectors.routes())
    routes.extend(status.routes())
    return routes


def build_app(runtime: Runtime, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    """Build the app for a running gateway."""
    routes = all_routes()
    routes.extend(extra_routes or [])
    app = Starlette(
        routes=routes,
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.runtime = runtime
    return app
