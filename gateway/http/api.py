"""The REST plumbing: a typed `endpoint` decorator (auth, rate limit, body/query validation) and its registry."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import msgspec
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors.store import Store
from gateway.core import Runtime
from gateway.errors import (
    ForbiddenError,
    InvalidRequestError,
    UnauthorizedError,
    UnsupportedMediaError,
    ValidationFailedError,
)
from gateway.http.jsondepth import check_depth
from gateway.http.principal import Principal, authenticate, client_address, require_admin, require_owner
from gateway.http.responses import JSON
from gateway.http.reststate import RestState, rest_of

# "token": the gateway token only (the `/v1/runtime/*` admin surface, `/files`, `/upload`); "connector": no gateway
# auth, the connector named in the path checks its own credential (Bearer shared token, Slack signature, Telegram
# secret header) over the raw body.
AuthMode = Literal["none", "user", "admin", "token", "connector"]
S = TypeVar("S")


class Error(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: Any = None


class ErrorBody(msgspec.Struct, kw_only=True):
    error: Error


class Ok(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"


class Ctx(msgspec.Struct):
    """One request as an endpoint sees it: the caller, the validated body and query, the path parameters."""

    request: Request
    runtime: Runtime
    principal: Principal | None
    body: Any = None
    query: Any = None

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def user(self) -> Principal:
        """The caller (only on endpoints with auth `user` or `admin`)."""
        assert self.principal is not None
        return self.principal

    def path(self, name: str) -> str:
        value: str = self.request.path_params[name]
        return value

    @property
    def rest(self) -> RestState:
        return rest_of(self.runtime)

    @property
    def client_key(self) -> str:
        """Who to charge a rate limit to: the user, else the client address (before login)."""
        if self.principal is not None:
            return self.principal.user_id or "gateway-token"
        return f"ip:{client_address(self.request)}"

    def auth_failed(self) -> None:
        """Count a failed authentication (a wrong password or token) against the client's address."""
        throttle = self.rest.throttle
        if throttle is not None:
            throttle.failed(client_address(self.request))

    def auth_succeeded(self) -> None:
        throttle = self.rest.throttle
        if throttle is not None:
            throttle.succeeded(client_address(self.request))

    def check_auth_throttle(self) -> None:
        """Raise 429 with `Retry-After` while the client's address must wait after failed authentications."""
        throttle = self.rest.throttle
        if throttle is not None:
            throttle.check(client_address(self.request))


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


Handler = Callable[[Ctx], Awaitable[Any]]


class Endpoint(msgspec.Struct):
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: AuthMode
    group: str | None
    body: type[Any] | tuple[type[Any], ...] | None  # a tuple: any one of these (per-kind connector fields)
    query: type[Any] | None
    response: type[Any] | None
    status: int
    errors: tuple[int, ...]
    media: str | None  # a non-JSON success body (text/event-stream, application/octet-stream)
    multipart: bool = False
    # False: `body`/`query` are documented only; the handler decodes them itself into those same types, because
    # its limits and error messages predate this registry and are part of the wire contract.
    validate: bool = True
    params: type[Any] | None = None  # a Struct typing the path parameters (documentation; strings otherwise)
    example: Any = None  # a request body shown in the docs (and sent by the fuzzer's examples phase)
    form_fields: tuple[str, ...] = ()  # optional text fields of a multipart body beside `file`
    also: dict[int, type[Any] | None] = msgspec.field(default_factory=dict)  # other success statuses (201 on create)


ENDPOINTS: list[Endpoint] = []


def endpoint(
    method: str,
    path: str,
    *,
    summary: str,
    tag: str,
    auth: AuthMode = "user",
    group: str | None = "api",
    body: type[Any] | tuple[type[Any], ...] | None = None,
    query: type[Any] | None = None,
    response: type[Any] | None = None,
    status: int = 200,
    errors: tuple[int, ...] = (),
    media: str | None = None,
    multipart: bool = False,
    validate: bool = True,
    params: type[Any] | None = None,
    example: Any = None,
    form_fields: tuple[str, ...] = (),
    also: dict[int, type[Any] | None] | None = None,
) -> Callable[[Handler], Handler]:
    """Register `fn(ctx)` for `method path`; it returns a Response, or a value encoded as JSON with `status`."""

    def register(fn: Handler) -> Handler:
        ENDPOINTS.append(
            Endpoint(
                method,
                path,
                fn,
                summary,
                tag,
                auth,
                group,
                body,
                query,
                response,
                status,
                errors,
                media,
                multipart,
                validate=validate,
                params=params,
                example=example,
                form_fields=form_fields,
                also=also or {},
            )
        )
        return fn

    return register


_AT = re.compile(r"^(.*) - at `\$(.*)`$", re.S)
_AT_KEY = re.compile(r"^(.*) - at `key` in `\$(.*)`$", re.S)


def validation_error(exc: msgspec.ValidationError, where: str = "body") -> ValidationFailedError:
    """Turn msgspec's message into a 422 naming the field: `details: [{"loc", "message"}]`."""
    text = str(exc)
    key = _AT_KEY.match(text)  # a dict key was wrong: msgspec says "at `key` in `$.path`"
    m = key or _AT.match(text)
    message, path = (m.group(1), m.group(2)) if m else (text, "")
    loc = [where, *[p for p in re.split(r"\.|\[|\]", path) if p]]
    if key:
        loc.append("(key)")
    return ValidationFailedError(f"invalid {'.'.join(loc)}: {message}", details=[{"loc": loc, "message": message}])


def decode_json(raw: bytes, type_: type[S]) -> S:
    """Decode and validate a JSON body into `type_`: 400 when it is not JSON, 422 when a field is wrong."""
    if not raw.strip():
        raw = b"{}"
    check_depth(raw)
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None


def decode_query(request: Request, type_: type[S]) -> S:
    # By their names on the wire (a field may be renamed: `from` is a keyword in Python).
    names = getattr(type_, "__struct_encode_fields__", ())
    data = {k: v for k, v in request.query_params.items() if k in names}
    try:
        return msgspec.convert(data, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, "query") from None


async def _authenticate(request: Request, runtime: Runtime) -> Principal:
    rest = rest_of(runtime)
    return await authenticate(
        request, gateway_token=runtime.token, issuer=rest.issuer, throttle=rest.throttle, store=runtime.store
    )


def _wrap(ep: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def view(request: Request) -> Response:
        runtime = runtime_of(request)
        ctx = Ctx(request, runtime, None)
        if ep.auth == "token":
            try:
                ctx.principal = await _authenticate(request, runtime)
            except UnauthorizedError:
                require_admin(request)  # not the gateway token either: its 401 says where the token is
                raise
            # An account's valid token is not a bad credential: say that this surface is the owner's (403).
            require_owner(ctx.principal, "the runtime, connector and file API (/v1/runtime, /files, /upload)")
        elif ep.auth not in ("none", "connector"):
            ctx.principal = await _authenticate(request, runtime)
            if ep.auth == "admin" and not ctx.principal.is_admin:
                raise ForbiddenError("this needs the super_admin role")
        if ep.group is not None and runtime.config.limits.enabled:
            rest_of(runtime).limiter.hit(ep.group, ctx.client_key)
        if ep.query is not None and ep.validate:
            ctx.query = decode_query(request, ep.query)
        if ep.body is not None and ep.validate:
            assert not isinstance(ep.body, tuple), "a choice of body types is for documentation (validate=False)"
            raw = await request.body()  # within `server.max_body_bytes`: asgi.BodyLimit checks every body
            ctx.body = decode_json(raw, ep.body)
        result = await ep.handler(ctx)
        if isinstance(result, Response):
            return result
        return JSON(result, status_code=ep.status)

    view.__name__ = ep.handler.__name__
    return view


def routes(module: str | None = None) -> list[Route]:
    """Starlette routes for every registered endpoint (`gateway.http.routes.register()` imports them all), or for
    those of one module only."""
    by_path: dict[str, list[Endpoint]] = {}
    for ep in ENDPOINTS:
        if module is not None and ep.handler.__module__ != module:
            continue
        by_path.setdefault(ep.path, []).append(ep)
    out: list[Route] = []
    for path, eps in by_path.items():
        views = {ep.method: _wrap(ep) for ep in eps}

        async def dispatch(
            request: Request, views: dict[str, Callable[[Request], Awaitable[Response]]] = views
        ) -> Response:
            # Starlette lets HEAD into a GET route: it is answered by the GET view (the server drops the body).
            return await views[request.method if request.method in views else "GET"](request)

        out.append(Route(path, dispatch, methods=list(views)))
    return out


@asynccontextmanager
async def uploaded_file(ctx: Ctx, *, what: str = "file", max_fields: int = 10) -> AsyncIterator[UploadFile]:
    """Yield the `file` field of a multipart body; the form and its spooled file are closed when the block ends.

    Raises 415 when the body is not multipart, 400 when it is malformed, 413 when a part is over its limit and
    422 when there is no `file` field.
    """
    if not ctx.request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaError(f"send the {what} as multipart/form-data in a field named `file`")
    try:
        form = await ctx.request.form(max_files=1, max_fields=max_fields, max_part_size=64 * 1024)
    except Exception as exc:  # python-multipart and Starlette raise several types for a malformed body
        if getattr(exc, "status", None) == 413:
            raise
        raise InvalidRequestError(f"malformed multipart body: {exc}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ValidationFailedError(
                "the form has no file field named `file`", details=[{"loc": ["body", "file"], "message": "required"}]
            )
        yield upload
    finally:
        await form.close()
