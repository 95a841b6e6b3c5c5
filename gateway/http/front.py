"""What serves before (and without) the Starlette app: `/health`, `/api/status`, the lifespan, `/ws`, external event
ingress, and the access log they share."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

import msgspec

from gateway.core import Runtime
from gateway.errors import GatewayError
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

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: it hands back serve_websocket's, so no frame of its own stays suspended on the
        # socket's task for its lifetime (~0.6 KB per idle connection).
        from gateway.ws.connection import serve_websocket

        client = scope.get("client")
        if self.forwarded is not None and client:
            address = self.forwarded.client_of(client[0], scope.get("headers", ()))
            if address != client[0]:
                scope = {**scope, "client": (address, 0)}
        scope["app"] = self.app
        return serve_websocket(scope, receive, send)


# Starlette's own answer to an exception no handler took (ServerErrorMiddleware, not in debug mode).
_SERVER_ERROR = b"Internal Server Error"
_SERVER_ERROR_HEADERS = [(b"content-length", b"21"), (b"content-type", b"text/plain; charset=utf-8")]


class LazyApp:
    """The gateway's app before anything but `/health`, `/api/status`, `/ws` and the lifespan was asked of it.

    Starlette's application, routing, requests and responses bring asyncio, http.client, email and
    python_multipart (~5.7 MiB resident, issue 17): an idle gateway that is only monitored (`/health`, and
    `/api/status`, which `gateway status` asks too) and holds WebSockets never needs them. The Starlette app
    (`build`) is built by the first other request, synchronously, so that concurrent first requests build it once.
    `/health` and `GET /api/status` answer here, before it is built and after, exactly as their Starlette routes
    do, through the same address rewrite, access log and error handling (a gateway with CORS is built at start: it
    adds headers to every answer).
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
        status: ASGIApp = _Handled(self._status)
        if config.log.access:
            status = AccessLog(status)
        if self._trusted:
            status = ForwardedFor(status, trusted=self._trusted)
        self._status_app = _ServerError(status)

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
        if kind == "http" and scope["method"] == "GET" and scope["path"] in _AHEAD and not _has_body(scope):
            await (self._health_app if scope["path"] == "/health" else self._status_app)(scope, receive, send)
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

    async def _status(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET /api/status` as its endpoint answers it (`gateway.http.api`): the caller authenticated (super_admin),
        charged to the `api` rate limit, then the report."""
        from gateway.errors import ForbiddenError
        from gateway.http.principal import authenticate
        from gateway.http.reststate import rest_of
        from gateway.http.status import report

        runtime: Runtime = self.state.runtime
        rest = rest_of(runtime)
        caller = _Caller.of(scope)
        principal = await authenticate(
            caller, gateway_token=runtime.token, issuer=rest.issuer, throttle=rest.throttle, store=runtime.store
        )
        if not principal.is_admin:
            raise ForbiddenError("this needs the super_admin role")
        if runtime.config.limits.enabled:
            rest.limiter.hit("api", principal.user_id or "gateway-token")
        status, body = await report(runtime)
        await send_json(send, status, body)


_AHEAD = ("/health", "/api/status")  # what LazyApp answers itself (GET, without a body)


class _Peer(NamedTuple):
    host: str


class _Caller:
    """A raw request as authentication reads it (`gateway.http.principal.Caller`), as Starlette's `Request` shows
    it: the first value of each header by its name, the client address."""

    __slots__ = ("client", "headers")

    def __init__(self, headers: dict[str, str], client: _Peer | None) -> None:
        self.headers = headers
        self.client = client

    @classmethod
    def of(cls, scope: Scope) -> _Caller:
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        client = scope.get("client")
        return cls(headers, None if client is None else _Peer(client[0]))


async def send_json(send: Send, status: int, content: Any, headers: dict[str, str] | None = None) -> None:
    """Send `content` as `gateway.http.responses.JSON` does (msgspec, redacted), with Starlette's headers."""
    body = redactor.redact_bytes(msgspec.json.encode(content))
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    names = {name for name, _ in raw}
    if b"content-length" not in names and not (status < 200 or status in (204, 304)):
        raw.append((b"content-length", str(len(body)).encode("latin-1")))
    if b"content-type" not in names:
        raw.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _Handled:
    """The app's exception handlers (`gateway.http.responses.exception_handlers`) around a raw handler, as
    Starlette's exception middleware applies them: a `GatewayError` answered here; the rarer ones by their own
    handler (which imports Starlette); an error no handler but `Exception`'s takes goes on to `_ServerError`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except GatewayError as exc:  # as `responses.exception_handlers` answers one (no other handled class is one)
            await send_json(send, exc.status, exc.body(), exc.headers)
        except Exception as exc:
            from starlette.requests import Request

            from gateway.http.responses import exception_handlers

            handlers = exception_handlers()
            handler = next((handlers[t] for t in type(exc).__mro__ if t in handlers and t is not Exception), None)
            if handler is None:
                raise
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)


class _ServerError:
    """Starlette's outermost `ServerErrorMiddleware` for a raw handler: an error no handler took is answered by
    the app's `Exception` handler (a logged 500) unless an answer started, then raised for the server's log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sent(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except Exception as exc:
            from starlette.requests import Request

            from gateway.http.responses import exception_handlers

            response = await exception_handlers()[Exception](Request(scope), exc)
            if not started:
                await response(scope, receive, send)
            raise


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
