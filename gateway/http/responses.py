"""Responses: JSON encoded with msgspec (secrets redacted), and the handlers giving every error one JSON shape."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from actors.store import StorageUnavailableError, disk_refused
from gateway.errors import GatewayError
from gateway.logs import redactor
from storage.clock import now_ms
from storage.usage import UsageCapReachedError

log = logging.getLogger("gateway.http")

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


async def _usage_cap(request: Request, exc: Exception) -> Response:
    # The turn was refused before anything of it was stored: the client keeps its message and may send it later.
    assert isinstance(exc, UsageCapReachedError)
    retry = max(1, math.ceil((exc.resets_at_ms - now_ms()) / 1000))
    details = {"used": exc.used, "cap": exc.cap, "resets_at": _iso(exc.resets_at_ms)}
    return error_response(429, "USAGE_CAP_REACHED", str(exc), headers={"Retry-After": str(retry)}, details=details)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s: %r", request.method, request.url.path, exc, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal error; see the gateway log")


def exception_handlers() -> dict[Any, Any]:
    """Starlette's `exception_handlers`: each error class to its response, the most specific first."""
    return {
        GatewayError: _gateway_error,
        HTTPException: _http_error,
        StorageUnavailableError: _storage_error,
        UsageCapReachedError: _usage_cap,
        OSError: _os_error,
        Exception: _internal_error,
    }
