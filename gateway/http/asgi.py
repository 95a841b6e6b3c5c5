"""The ASGI application: every route on one port, its middleware (body limit, CORS, access log), and `/ws`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import trio
from starlette.applications import Starlette
from starlette.datastructures import URLPath
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route, WebSocketRoute

from gateway.core import Runtime
from gateway.errors import PayloadTooLargeError, RequestTimeoutError
from gateway.http.api import runtime_of
from gateway.http.forwarded import ForwardedFor
from gateway.http.front import AccessLog, WebSocketAhead, health_body
from gateway.http.responses import JSON, error_response, exception_handlers
from gateway.types import ASGIApp, Message, Receive, Scope, Send

# Part headers and boundaries around an uploaded file: allowed beyond the file limit before the body is refused.
MULTIPART_SLACK = 64 * 1024  # room for part headers and small fields (a caption) beside the file


async def health(request: Request) -> Response:
    status, body = health_body(runtime_of(request))
    return JSON(body, status_code=status)


class RouteGroup(BaseRoute):
    """The routes of one module, built by `load` on the first request under one of `prefixes`.

    A gateway serves without importing its REST features: each module's code (and what it imports) is loaded
    by the first request that may be for it. Once loaded, it matches exactly as its routes would in its place.
    """

    def __init__(self, name: str, prefixes: tuple[str, ...], load: Callable[[], list[BaseRoute]]) -> None:
        self.name = name
        self.prefixes = prefixes
        self._load = load
        self._routes: list[BaseRoute] | None = None

    @property
    def routes(self) -> list[BaseRoute]:
        if self._routes is None:
            self._routes = self._load()
        return self._routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or not str(scope["path"]).startswith(self.prefixes):
            return Match.NONE, {}
        partial: tuple[Scope, BaseRoute] | None = None
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return match, {**child, _MATCHED: route}
            if match is Match.PARTIAL and partial is None:
                partial = (child, route)
        if partial is not None:
            return Match.PARTIAL, {**partial[0], _MATCHED: partial[1]}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: BaseRoute = scope[_MATCHED]
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)


_MATCHED = "gateway.route"  # the scope key a RouteGroup leaves the route it matched under, for its handle()


def _rest_group(name: str, prefixes: tuple[str, ...]) -> RouteGroup:
    def load() -> list[BaseRoute]:
        from gateway.http import api
        from gateway.http import routes as rest

        return list(api.routes(rest.load(name)))

    return RouteGroup(name, prefixes, load)


def _openapi_routes() -> list[BaseRoute]:
    from gateway.http import openapi

    return openapi.routes()


def all_routes(*, lazy: bool = False) -> list[BaseRoute]:
    """Every route of the gateway. Each REST feature lives in one module of `gateway.http.routes`, listed in its
    `MODULES`. `lazy`: each module (and the OpenAPI documents) as a `RouteGroup` imported on first use, as the
    app serves them; otherwise all imported and listed."""
    from gateway.http import routes as rest
    from gateway.http import webui
    from gateway.ws.connection import websocket_app

    routes: list[BaseRoute] = [Route("/health", health, methods=["GET"])]
    routes.append(WebSocketRoute("/ws", websocket_app))
    # The connector routes, `/files` and `/upload` included.
    groups = [_rest_group(name, prefixes) for name, prefixes in rest.MODULES.items()]
    groups.append(RouteGroup("openapi", ("/openapi.json", "/docs", "/redoc"), _openapi_routes))
    if lazy:
        routes.extend(groups)
    else:
        rest.register()
        for group in groups:
            routes.extend(group.routes)
    routes.extend(webui.routes())  # only `/` and `/assets/*`: the SPA routes by URL hash, so it shadows nothing
    return routes


class Limit(msgspec.Struct, frozen=True):
    """A request body limit: the bytes it allows, the setting that sets it, and how its 413 names the body."""

    size: int
    setting: str
    what: str = "the request body"
    slack: int = 0  # allowed beyond `size` and not counted by it: the multipart framing around an upload's file

    def too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError.over(self.size, self.setting, what=self.what)


class BodyLimit:
    """The one body limit of every request, checked here only: by Content-Length up front, else while the body
    streams in. Each path has one (`server.max_body_bytes`; an upload route, its own larger file limit)."""

    def __init__(self, app: ASGIApp, *, default: Limit, larger: dict[str, Limit], body_timeout: float = 30.0) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.default = default
        self.larger = larger  # path -> its own limit (uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.larger.get(scope["path"], self.default)
        limit = rule.size + rule.slack
        seen = 0
        complete = False
        has_body = False

        async def closing(message: Message) -> None:
            # Answered before the whole body came in (refused, or a handler that never read it): hypercorn then
            # closes the connection, so say so. Without `Connection: close` a client reuses it for its next request,
            # which fails with "server disconnected" whenever the close wins the race (a loaded machine).
            if message["type"] == "http.response.start" and has_body and not complete:
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        for name, value in scope.get("headers", []):
            if name == b"transfer-encoding":
                has_body = True
            elif name == b"content-length":
                if not value.isdigit():
                    has_body = True
                    await error_response(400, "INVALID_REQUEST", "bad Content-Length header")(scope, receive, closing)
                    return
                has_body = has_body or int(value) > 0
                if int(value) > limit:
                    too_big = rule.too_large()
                    await error_response(too_big.status, too_big.code, too_big.message)(scope, receive, closing)
                    return

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
                        raise rule.too_large()
                else:
                    complete = True
                return message
            raise RequestTimeoutError(f"the request body stalled for {self.body_timeout:g} s; send it without pauses")

        await self.app(scope, counted, closing if has_body else send)


def websocket_ahead(app: ASGIApp) -> WebSocketAhead | None:
    """What serves `/ws` ahead of `app` (None: `app` serves no `/ws`, or is not the gateway's)."""
    if not isinstance(app, Starlette) or not any(getattr(r, "path", None) == "/ws" for r in app.routes):
        return None
    trusted = app.state.runtime.config.server.trusted_proxies
    return WebSocketAhead(app, ForwardedFor(app, trusted=trusted) if trusted else None)


def _methods(routes: list[BaseRoute]) -> set[str]:
    """Every method the routes answer (loading the lazy groups: a CORS gateway imports its routes at start)."""
    out: set[str] = set()
    for route in routes:
        for r in route.routes if isinstance(route, RouteGroup) else [route]:
            out.update(getattr(r, "methods", None) or ())
    return out


def build_app(runtime: Runtime, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    """Build the app for a running gateway."""
    config = runtime.config
    routes = all_routes(lazy=True)
    if not config.api.enabled:  # the E2E API seed's `api.enabled = false`: no /ws, /files, /upload
        routes = [r for r in routes if getattr(r, "path", None) != "/ws" and getattr(r, "name", None) != "files"]
    routes.extend(extra_routes or [])
    middleware = [
        Middleware(
            BodyLimit,
            default=Limit(config.server.max_body_bytes, "server.max_body_bytes"),
            # The upload routes have their file's own limit; the body adds the multipart framing around the file.
            larger={
                "/api/files": Limit(
                    config.limits.max_upload_bytes, "limits.max_upload_bytes", "the upload", MULTIPART_SLACK
                ),
                "/upload": Limit(
                    config.files.max_upload_bytes, "files.max_upload_bytes", "the upload", MULTIPART_SLACK
                ),
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
                allow_methods=sorted(_methods(routes) | {"OPTIONS"}),
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
        exception_handlers=exception_handlers(),
    )
    app.state.runtime = runtime
    return app
