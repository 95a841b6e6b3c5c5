"""Status (every service check, 503 when one fails), the in-memory log view, providers (and their probe), models."""

from __future__ import annotations

import calendar
import logging
import time
from typing import Annotated, Any, Literal

import msgspec

from actors.providers.base import Probeable
from gateway.errors import NotFoundError, ValidationFailedError
from gateway.http.api import Ctx, endpoint
from gateway.http.responses import JSON
from gateway.http.status import StatusResponse, report
from gateway.logs import memory_handler, redactor

log = logging.getLogger("gateway.status")
Level = Literal["debug", "info", "warning", "error", "critical"]
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class LogQuery(msgspec.Struct, kw_only=True):
    level: Level | None = None
    since: str | None = None  # ISO 8601 UTC (2026-01-31T12:00:00Z) or seconds since the epoch
    until: str | None = None
    q: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=2000)] = 200


class LogRecord(msgspec.Struct, kw_only=True):
    ts: str
    level: str
    logger: str
    msg: str


class LogResponse(msgspec.Struct, kw_only=True):
    logs: list[LogRecord]


class ProviderOut(msgspec.Struct, kw_only=True):
    name: str
    models: list[str]
    default_model: str | None
    available: bool
    detail: str
    active: bool


class ProviderList(msgspec.Struct, kw_only=True):
    providers: list[ProviderOut]


class ProbeOut(msgspec.Struct, kw_only=True):
    name: str
    # ok: it answered as it should; error: it answered with an error (a refused key, a wrong base URL);
    # unreachable: no answer (connection refused, no such host, no answer within PROBE_TIMEOUT).
    status: Literal["ok", "error", "unreachable"]
    detail: str


PROBE_TIMEOUT = 5.0  # seconds: a provider that takes longer to answer a listing is not one to chat with


class Model(msgspec.Struct, kw_only=True):
    id: str
    provider: str


class ModelList(msgspec.Struct, kw_only=True):
    models: list[Model]
    active_provider: str
    active_model: str | None


@endpoint(
    "GET",
    "/api/status",
    summary="Every service's health; 503 when one is in error (super_admin)",
    tag="status",
    auth="admin",
    response=StatusResponse,
    errors=(503,),
)
async def status(ctx: Ctx) -> Any:
    # A gateway serving through `gateway.http.front` answers it there; this route is the app's own (and documents it).
    code, body = await report(ctx.runtime)
    return body if code == 200 else JSON(body, status_code=code)


def _parse_time(value: str | None, field: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        text = value.rstrip("Z").split(".")[0]
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        message = "use ISO 8601 UTC (2026-01-31T12:00:00Z) or seconds since the epoch"
        raise ValidationFailedError(
            f"invalid query.{field}: {message}", details=[{"loc": ["query", field], "message": message}]
        ) from None


def _record_time(ts: str) -> float:
    try:
        return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + ts[19:].rstrip("Z"))
    except ValueError:
        return 0.0


@endpoint(
    "GET",
    "/api/logs",
    summary="Recent log records (redacted), filtered by level, time and text (super_admin)",
    tag="status",
    auth="admin",
    query=LogQuery,
    response=LogResponse,
)
async def logs(ctx: Ctx) -> LogResponse:
    q: LogQuery = ctx.query
    since, until = _parse_time(q.since, "since"), _parse_time(q.until, "until")
    floor = _LEVELS[q.level] if q.level else 0
    needle = q.q.lower() if q.q else None
    out: list[LogRecord] = []
    for rec in reversed(list(memory_handler.records)):
        level = str(rec.get("level", "info"))
        if _LEVELS.get(level, 20) < floor:
            continue
        ts = str(rec.get("ts", ""))
        t = _record_time(ts)
        if (since is not None and t < since) or (until is not None and t > until):
            continue
        msg = str(rec.get("msg", ""))
        if needle and needle not in msg.lower() and needle not in str(rec.get("logger", "")).lower():
            continue
        out.append(LogRecord(ts=ts, level=level, logger=str(rec.get("logger", "")), msg=msg))
        if len(out) >= q.limit:
            break
    return LogResponse(logs=out)


@endpoint("GET", "/api/providers", summary="The agent providers", tag="status", response=ProviderList)
async def providers(ctx: Ctx) -> ProviderList:
    active = ctx.runtime.choice.provider
    out = []
    for name, provider in sorted(ctx.runtime.providers.items()):
        info = provider.info()
        out.append(
            ProviderOut(
                name=name, models=list(info.models), default_model=info.default_model, available=info.available,
                detail=info.detail, active=name == active,
            )
        )  # fmt: skip
    return ProviderList(providers=out)


@endpoint(
    "GET",
    "/api/providers/{name}/probe",
    summary="Try a provider now (openai: GET {base_url}/models with its key) and say whether it answers",
    tag="status",
    response=ProbeOut,
    errors=(404,),
)
async def probe_provider(ctx: Ctx) -> ProbeOut:
    name = ctx.path("name")
    provider = ctx.runtime.providers.get(name)
    if provider is None:
        known = ", ".join(sorted(ctx.runtime.providers))
        raise NotFoundError(f"no provider {name!r}; this gateway runs {known}", code="PROVIDER_NOT_FOUND")
    if not isinstance(provider, Probeable):
        return ProbeOut(name=name, status="error", detail="this provider cannot be tried from here")
    found = await provider.probe(PROBE_TIMEOUT)
    return ProbeOut(name=name, status=found.status, detail=redactor.redact(found.detail))


@endpoint("GET", "/api/models", summary="Models the providers offer", tag="status", response=ModelList)
async def models(ctx: Ctx) -> ModelList:
    found: list[Model] = []
    for name, provider in sorted(ctx.runtime.providers.items()):
        found.extend(Model(id=m, provider=name) for m in provider.info().models)
    return ModelList(
        models=found, active_provider=ctx.runtime.choice.provider, active_model=ctx.runtime.active_model() or None
    )
