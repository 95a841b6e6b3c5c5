"""External connectors' event ingress (`POST .../external/{name}/events[/batch]`) served ahead of the app's routing."""

from __future__ import annotations

import logging
import re
from typing import Any

import trio

from gateway.core import Runtime
from gateway.errors import GatewayError, PayloadTooLargeError, RequestTimeoutError, UnavailableError
from gateway.types import Message, Receive, Scope, Send

log = logging.getLogger("gateway.http")

# The two external ingress routes (`gateway.http.routes.connectors`): a name is one path segment there too.
_PATH = re.compile(r"/v1/connectors/external/([^/]+)/(events|events/batch)")


def ingress_action(scope: Scope) -> tuple[str, str] | None:
    """(connector name, action) when `scope` is a POST to an external connector's events route, else None."""
    if scope["method"] != "POST":
        return None
    m = _PATH.fullmatch(scope["path"])
    return (m.group(1), m.group(2)) if m is not None else None


class IngressAhead:
    """Serves external events without Starlette's application, middleware stack, route table and request object:
    on a 100-event batch those cost as much as the gateway's own work per request (issue 17 target 5). What the app
    does for these routes is done here the same way: the one body limit (`server.max_body_bytes`, by Content-Length
    up front, else while the body streams in), the stalled-body timeout, `Connection: close` on an answer sent before
    the whole body came in, and each error rendered as the app's exception handlers render it. The access log and
    the client address rewrite wrap this as they wrap `/health`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        server = runtime.config.server
        self.size = server.max_body_bytes
        self.body_timeout = server.body_timeout

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError.over(self.size, "server.max_body_bytes", what="the request body")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from gateway.http.responses import error_response

        found = ingress_action(scope)
        assert found is not None, "routed here by its path"
        name, action = found
        headers: dict[str, str] = {}
        declared = -1
        chunked = False
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                if not value.isdigit():
                    await error_response(400, "INVALID_REQUEST", "bad Content-Length header")(
                        scope, receive, _closing(send)
                    )
                    return
                declared = int(value)
            elif key == b"transfer-encoding":
                chunked = True
            headers[key.decode("latin-1")] = value.decode("latin-1")
        has_body = chunked or declared > 0
        if declared > self.size:
            exc = self._too_large()
            await error_response(exc.status, exc.code, exc.message)(scope, receive, _closing(send))
            return
        try:
            body = await self._body(receive) if has_body else b""
            if body is None:
                return  # the client went away before its body was whole: nobody to answer
            response = await self._answer(name, action, headers, body)
        except _BodyError as exc:
            # Answered before the whole body came in: hypercorn closes the connection, so say so.
            await _error(exc.error)(scope, receive, _closing(send))
            return
        except Exception as exc:
            await _error(exc)(scope, receive, send)
            return
        await response(scope, receive, send)

    async def _body(self, receive: Receive) -> bytes | None:
        parts: list[bytes] = []
        seen = 0
        while True:
            # A body that stalls holds a task and a socket: every pause is bounded, as `asgi.BodyLimit` bounds it.
            message: Message | None = None
            with trio.move_on_after(self.body_timeout):
                message = await receive()
            if message is None:
                raise _BodyError(
                    RequestTimeoutError(f"the request body stalled for {self.body_timeout:g} s; send it without pauses")
                )
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.size:
                raise _BodyError(self._too_large())
            parts.append(chunk)
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _answer(self, name: str, action: str, headers: dict[str, str], body: bytes) -> Any:
        from gateway.connectors.service import ConnectorService
        from gateway.http.routes.connectors import ask_connector

        svc = self.runtime.connectors
        if svc is None:
            raise UnavailableError("the connector service is not running")
        assert isinstance(svc, ConnectorService)
        return await ask_connector(svc, "external", name, action, headers, body)


class _BodyError(Exception):
    """The body broke a limit while it was read: the answer goes out before it is whole."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def _closing(send: Send) -> Send:
    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return closing


def _error(exc: Exception) -> Any:
    """The response the app's exception handlers (`gateway.http.responses.exception_handlers`) give `exc`."""
    from actors.store import StorageUnavailableError
    from gateway.http.responses import error_response

    if isinstance(exc, GatewayError):
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers, details=exc.details)
    if isinstance(exc, StorageUnavailableError):
        log.error("storage refused external ingress: %s", exc)
        message = f"storage cannot take writes right now ({exc}); nothing was stored, retry later"
        return error_response(503, "STORAGE_UNAVAILABLE", message, headers={"Retry-After": "5"})
    log.error("unhandled error on external ingress: %r", exc, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal error; see the gateway log")
