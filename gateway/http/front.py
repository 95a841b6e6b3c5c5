"""What serves ahead of the Starlette app: `/health`, the lifespan, `/ws`, external event ingress, the access log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import msgspec

from gateway.core import Runtime
from gateway.http.forwarded import ForwardedFor
from gateway.http.ingress import IngressAhead, ingress_action
from gateway.logs import redactor
from gateway.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("gateway.access")


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


def health_body(rt: Runtime) -> tuple[int, dict[str, Any]]:
    """`GET /health`'s status and body: 503 when storage refuses writes (still serving, but a monitor must see it)."""
    body: dict[str, Any] = {
        "status": "ok",
        "uptime": round(rt.uptime(), 3),
        "connections": rt.connections,
        "version": rt.version,
    }
    reason = rt.store.degraded()
    if reason is not None:
        return 503, {**body, "status": "degraded", "reason": reason}
    return 200, body


class WebSocketAhead:
    """`/ws` served ahead of the app's middleware and routing, which do nothing for a WebSocket but stay suspended
    on its task for the socket's lifetime: ten coroutine frames, some 3 KB per idle connection (issue 17). Only the
    client address rewrite of `server.trusted_proxies` applies to it, and is applied here.

    `app`: what the socket's scope names as its app (its `state.runtime` is the gateway's)."""

    def __init__(self, app: Any, forwarded: ForwardedFor | None) -> None:
        self.app = app
        self.forwarded = forwarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from gateway.ws.connection import serve_websocket

        client = scope.get("client")
        if self.forwarded is not None and client:
            address = self.forwarded.client_of(client[0], scope.get("headers", ()))
            if address != client[0]:
                scope = {**scope, "client": (address, 0)}
        scope["app"] = self.app
        await serve_websocket(scope, receive, send)


# Starlette's own answer to an exception no handler took (ServerErrorMiddleware, not in debug mode).
_SERVER_ERROR = b"Internal Server Error"
_SERVER_ERROR_HEADERS = [(b"content-length", b"21"), (b"content-type", b"text/plain; charset=utf-8")]


class LazyApp:
    """The gateway's app before anything but `/health`, `/ws` and the lifespan was asked of it.

    Starlette's application, routing, requests and responses bring asyncio, http.client, email and
    python_multipart (~4 MiB resident, issue 17): an idle gateway that is only monitored and holds WebSockets
    never needs them. The Starlette app (`build`) is built by the first other request, synchronously, so that
    concurrent first requests build it once. `/health` answers here exactly as its Starlette route did, through
    the same address rewrite and access log (a gateway with CORS is built at start: it adds headers to `/health`).
    """

    def __init__(self, runtime: Runtime, build: Callable[[], ASGIApp]) -> None:
        self.state = SimpleNamespace(runtime=runtime)  # as on the Starlette app: `/ws`'s handler reads it
        self._build = build
        self._app: ASGIApp | None = None
        config = runtime.config
        health: ASGIApp = self._health
        if config.log.access:
            health = AccessLog(health)
        self._trusted = config.server.trusted_proxies
        if self._trusted:
            health = ForwardedFor(health, trusted=self._trusted)
        self._health_app = health
        ingress: ASGIApp = IngressAhead(runtime)
        if config.log.access:
            ingress = AccessLog(ingress)
        if self._trusted:
            ingress = ForwardedFor(ingress, trusted=self._trusted)
        self._ingress_app = ingress

    @property
    def built(self) -> bool:
        return self._app is not None

    def app(self) -> ASGIApp:
        """The Starlette app, built now if no request built it before (nothing awaits in between)."""
        if self._app is None:
            self._app = self._build()
        return self._app

    def websocket_ahead(self) -> WebSocketAhead | None:
        """What serves `/ws` ahead of the app (None with `api.enabled = false`: the app then refuses `/ws`)."""
        if not self.state.runtime.config.api.enabled:
            return None
        return WebSocketAhead(self, ForwardedFor(self._health_app, trusted=self._trusted) if self._trusted else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["path"] == "/health" and scope["method"] == "GET" and not _has_body(scope):
            await self._health_app(scope, receive, send)
        elif kind == "http" and ingress_action(scope) is not None:
            await self._ingress_app(scope, receive, send)
        elif kind == "lifespan" and self._app is None:
            await _lifespan(receive, send)
        else:
            await self.app()(scope, receive, send)

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body = health_body(self.state.runtime)
        except Exception:
            await send({"type": "http.response.start", "status": 500, "headers": _SERVER_ERROR_HEADERS})
            await send({"type": "http.response.body", "body": _SERVER_ERROR})
            raise  # for the server's error log, as Starlette re-raises it
        # As `gateway.http.responses.JSON` renders it.
        content = redactor.redact_bytes(msgspec.json.encode(body))
        headers = [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _has_body(scope: Scope) -> bool:
    """Whether the request announces a body: the app's body limit judges those (400, 413), so the app serves it."""
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope.get("headers", ()))


async def _lifespan(receive: Receive, send: Send) -> None:
    """The lifespan protocol as Starlette's router speaks it without handlers: nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
