"""Cron jobs over REST: list, create (cron expression in a timezone, or interval; a session or a connector chat),
edit, toggle, trigger, and each job's run history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from actors.messages import SessionKey
from actors.scheduler import ScheduleError, Scheduler, check_cron, check_timezone, next_slot
from gateway.core import started
from gateway.errors import ForbiddenError, NotFoundError, ValidationFailedError
from gateway.http.api import Ctx, Ok, endpoint
from gateway.http.routes.account import iso
from gateway.http.routes.messages import connector_transport, reply_through_connector
from gateway.http.routes.sessions import Channel, ChatId, owned_session
from gateway.http.turns import ensure_session
from storage import cron as cron_db
from storage import sessions as sess_db
from storage.clock import now_ms
from storage.cron import CronJob, CronRun

CronExpression = Annotated[str, msgspec.Meta(max_length=200)]
Interval = Annotated[int, msgspec.Meta(ge=1, le=366 * 86400)]
Timezone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CreateCronRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    cron: CronExpression | None = None
    interval_seconds: Interval | None = None
    timezone: Timezone = "UTC"
    session_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    connector: Channel | None = None
    chat_id: ChatId | None = None
    enabled: bool = True


class UpdateCronRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields given change. `cron` or `interval_seconds` replaces the schedule (give one)."""

    name: Annotated[str, msgspec.Meta(max_length=200)] | UnsetType = UNSET
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)] | UnsetType = UNSET
    cron: CronExpression | UnsetType = UNSET
    interval_seconds: Interval | UnsetType = UNSET
    timezone: Timezone | UnsetType = UNSET
    session_id: Annotated[str, msgspec.Meta(max_length=200)] | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class CronJobOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    cron: str | None
    interval_seconds: int | None
    timezone: str  # IANA name: the zone `cron` is read in
    session_id: str | None
    connector: str | None
    chat_id: str | None
    prompt: str
    enabled: bool
    next_fire_at: str | None
    next_fire_local: str | None  # the same instant as wall time in `timezone`, with its UTC offset
    last_fire_at: str | None
    created_at: str
    updated_at: str


class CronRunOut(msgspec.Struct, kw_only=True):
    id: int
    trigger: Literal["schedule", "manual"]
    status: Literal["running", "ok", "error", "skipped"]
    slot_at: str  # the slot it ran for (a manual run: when it was triggered)
    started_at: str
    ended_at: str | None
    duration_ms: int | None
    error: str | None
    session_id: str | None
    turn_id: str | None


class CronRunList(msgspec.Struct, kw_only=True):
    runs: list[CronRunOut]
    next_before: int | None  # pass as `before` for the next (older) page; null: this is the last


class RunsQuery(msgspec.Struct, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    before: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None  # a run id: only older runs


class CronList(msgspec.Struct, kw_only=True):
    jobs: list[CronJobOut]


class ToggleRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool | None = None  # absent or null: flip the job's state


class ToggleResponse(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    enabled: bool


class TriggerRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    job_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class TriggerResponse(msgspec.Struct, kw_only=True):
    status: Literal["ok", "failed"]
    message: str
    session_id: str | None
    turn_id: str | None


def out(job: CronJob) -> CronJobOut:
    return CronJobOut(
        id=job.id,
        name=job.name,
        cron=job.cron,
        interval_seconds=job.interval_seconds,
        timezone=job.timezone,
        session_id=job.session_id,
        connector=job.connector,
        chat_id=job.chat_id,
        prompt=job.prompt,
        enabled=job.enabled,
        next_fire_at=iso(job.next_fire_at),
        next_fire_local=_local(job.next_fire_at, job.timezone),
        last_fire_at=iso(job.last_fire_at),
        created_at=iso(job.created_at) or "",
        updated_at=iso(job.updated_at) or "",
    )


def _local(ms: int | None, timezone: str) -> str | None:
    if ms is None:
        return None
    try:
        zone = check_timezone(timezone)
    except ScheduleError:  # a zone a later tz database dropped: the UTC time is still given
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).isoformat(timespec="seconds")


def run_out(run: CronRun) -> CronRunOut:
    return CronRunOut(
        id=run.id,
        trigger="manual" if run.trigger == "manual" else "schedule",
        status=run.status if run.status in ("running", "ok", "error", "skipped") else "error",  # type: ignore[arg-type]
        slot_at=iso(run.slot_at) or "",
        started_at=iso(run.started_at) or "",
        ended_at=iso(run.ended_at),
        duration_ms=None if run.ended_at is None else max(0, run.ended_at - run.started_at),
        error=run.error,
        session_id=run.session_id,
        turn_id=run.turn_id,
    )


def _check_schedule(cron: str | None, timezone: str) -> None:
    """422 unless the expression fires on some date and the timezone is an IANA zone."""
    if cron is not None:
        try:
            check_cron(cron)
        except ScheduleError as exc:
            raise _invalid("cron", str(exc)) from None
    try:
        check_timezone(timezone)
    except ScheduleError as exc:
        raise _invalid("timezone", str(exc)) from None


def _invalid(field: str, message: str) -> ValidationFailedError:
    return ValidationFailedError(
        f"invalid body.{field}: {message}", details=[{"loc": ["body", field], "message": message}]
    )


def scheduler_of(ctx: Ctx) -> Scheduler:
    return started(ctx.runtime.services.scheduler, "the cron scheduler")


async def owned_job(ctx: Ctx, job_id: str) -> CronJob:
    job = await ctx.store.call(cron_db.get_job, job_id)
    if job is None:
        raise NotFoundError(f"no cron job {job_id!r}", code="CRON_JOB_NOT_FOUND")
    if not ctx.user.may_access(job.owner):
        raise ForbiddenError("this cron job belongs to another user", code="CRON_JOB_FORBIDDEN")
    return job


@endpoint("GET", "/api/cron", summary="List cron jobs", tag="cron", response=CronList)
async def list_jobs(ctx: Ctx) -> CronList:
    jobs = await ctx.store.call(cron_db.list_jobs, ctx.user.owner, all_owners=ctx.user.is_admin)
    return CronList(jobs=[out(j) for j in jobs])


@endpoint(
    "POST",
    "/api/cron/create",
    summary="Create a job: `cron` (5 fields, read in `timezone`, an IANA name, default UTC) or `interval_seconds`; "
    "target `session_id`, `connector`+`chat_id`, or neither (a new session of the job's own)",
    tag="cron",
    body=CreateCronRequest,
    response=CronJobOut,
    status=201,
    errors=(403, 404, 422),
)
async def create_job(ctx: Ctx) -> CronJobOut:
    req: CreateCronRequest = ctx.body
    if (req.cron is None) == (req.interval_seconds is None):
        raise _invalid("cron", "give exactly one of cron or interval_seconds")
    _check_schedule(req.cron, req.timezone)
    if req.session_id is not None and req.connector is not None:
        raise _invalid("session_id", "give one target: session_id, or connector with chat_id (neither: a new session)")
    if (req.connector is None) != (req.chat_id is None):
        raise _invalid("chat_id", "a connector target needs both connector and chat_id")
    job_id = cron_db.new_job_id()
    session_id, connector = req.session_id, None
    if req.session_id is not None:
        session_id = (await owned_session(ctx, req.session_id)).id
    elif req.connector is not None:
        if not ctx.user.is_admin:
            raise ForbiddenError("only an admin can schedule messages to a connector chat", code="FORBIDDEN")
        connector = connector_transport(ctx, req.connector)
        # The chat's session exists from now on, and a telegram/slack chat replies into itself.
        key = SessionKey(connector, str(req.chat_id))
        row = await ensure_session(ctx.runtime, key, ctx.user.owner)
        await reply_through_connector(ctx, key, row.id)
    ts = now_ms()
    job = CronJob(
        id=job_id, owner=ctx.user.owner, name=req.name, cron=req.cron,
        interval_seconds=req.interval_seconds, session_id=session_id, connector=connector,
        chat_id=req.chat_id if connector else None, prompt=req.prompt, enabled=req.enabled,
        next_fire_at=None, last_fire_at=None, created_at=ts, updated_at=ts, timezone=req.timezone,
    )  # fmt: skip
    scheduler = scheduler_of(ctx)
    if req.enabled:
        job = msgspec.structs.replace(job, next_fire_at=next_slot(job, scheduler.now_ms()))
    own = session_id is None and connector is None
    title = f"Cron: {req.name or req.prompt}"[:200]

    def txn(conn: Any) -> CronJob:
        made = job
        if own:
            # No target: the job gets a session of its own, its creator's, where its runs can be read.
            row = sess_db.get_or_create_session(conn, "cron", job_id, "", now_ms=ts, owner=ctx.user.owner)
            sess_db.rename_session(conn, row.id, title, now_ms=ts)
            made = msgspec.structs.replace(job, session_id=row.id)
        return cron_db.create_job(conn, made)

    job = await ctx.store.call(txn)
    scheduler.wake()
    return out(job)


@endpoint(
    "PATCH",
    "/api/cron/{id}",
    summary="Edit a job: only the fields given change; a new `cron`, `interval_seconds` or `timezone` (or enabling "
    "it) schedules it afresh from now",
    tag="cron",
    body=UpdateCronRequest,
    response=CronJobOut,
    errors=(403, 404, 422),
)
async def update_job(ctx: Ctx) -> CronJobOut:
    req: UpdateCronRequest = ctx.body
    given = {f: v for f in req.__struct_fields__ if not isinstance(v := getattr(req, f), UnsetType)}
    if not given:
        raise ValidationFailedError("nothing to change: give at least one field of the job")
    if "cron" in given and "interval_seconds" in given:
        raise _invalid("cron", "give one of cron or interval_seconds")
    job = await owned_job(ctx, ctx.path("id"))
    changes: dict[str, Any] = {k: v for k, v in given.items() if k in ("name", "prompt", "enabled", "timezone")}
    if "cron" in given:
        changes.update(cron=given["cron"], interval_seconds=None)
    if "interval_seconds" in given:
        changes.update(cron=None, interval_seconds=given["interval_seconds"])
    if "session_id" in given:
        changes.update(session_id=(await owned_session(ctx, given["session_id"])).id, connector=None, chat_id=None)
    new = msgspec.structs.replace(job, **changes, updated_at=now_ms())
    _check_schedule(new.cron if "cron" in given else None, new.timezone)
    scheduler = scheduler_of(ctx)
    rescheduled = any(k in changes for k in ("cron", "interval_seconds", "timezone"))
    if not new.enabled:
        new = msgspec.structs.replace(new, next_fire_at=None)
    elif rescheduled or not job.enabled:
        try:
            new = msgspec.structs.replace(new, next_fire_at=next_slot(new, scheduler.now_ms()))
        except ScheduleError as exc:
            raise _invalid("cron", str(exc)) from None
    await ctx.store.call(cron_db.update_job, new)
    scheduler.wake()
    return out(new)


@endpoint(
    "GET",
    "/api/cron/{id}/runs",
    summary="The job's runs, newest first: status running | ok | error | skipped (a slot that came while the "
    "previous run still ran), with start, end, error and the session and turn each ran in; page with `before`",
    tag="cron",
    query=RunsQuery,
    response=CronRunList,
    errors=(403, 404),
)
async def job_runs(ctx: Ctx) -> CronRunList:
    q: RunsQuery = ctx.query
    job = await owned_job(ctx, ctx.path("id"))
    runs = await ctx.store.read(cron_db.list_runs, job.id, limit=q.limit + 1, before=q.before)
    page = runs[: q.limit]
    return CronRunList(runs=[run_out(r) for r in page], next_before=page[-1].id if len(runs) > q.limit else None)


@endpoint(
    "DELETE",
    "/api/cron/{id}",
    summary="Delete a job and its run history",
    tag="cron",
    response=Ok,
    errors=(403, 404),
)
async def delete_job(ctx: Ctx) -> Ok:
    job = await owned_job(ctx, ctx.path("id"))
    await ctx.store.call(cron_db.delete_job, job.id)
    scheduler_of(ctx).wake()
    return Ok()


@endpoint(
    "POST",
    "/api/cron/{id}/toggle",
    summary='Enable or disable a job: `{"enabled": bool}`, or no body to flip it (enabling schedules from now)',
    tag="cron",
    body=ToggleRequest,
    response=ToggleResponse,
    errors=(403, 404, 422),
)
async def toggle_job(ctx: Ctx) -> ToggleResponse:
    req: ToggleRequest = ctx.body
    job = await owned_job(ctx, ctx.path("id"))
    scheduler = scheduler_of(ctx)
    enabled = not job.enabled if req.enabled is None else req.enabled
    if enabled == job.enabled:
        return ToggleResponse(enabled=enabled)  # already so: an enabled job keeps its next slot
    nxt = next_slot(job, scheduler.now_ms()) if enabled else None
    await ctx.store.call(cron_db.set_enabled, job.id, enabled, nxt, now_ms=now_ms())
    scheduler.wake()
    return ToggleResponse(enabled=enabled)


@endpoint(
    "POST",
    "/api/cron/trigger",
    summary="Run a job now (recorded as a manual run)",
    tag="cron",
    body=TriggerRequest,
    response=TriggerResponse,
    errors=(403, 404, 422),
)
async def trigger_job(ctx: Ctx) -> TriggerResponse:
    req: TriggerRequest = ctx.body
    job = await owned_job(ctx, req.job_id)
    fired = await scheduler_of(ctx).trigger(job)
    if fired.accepted is None:
        return TriggerResponse(status="failed", message=fired.error or "failed", session_id=None, turn_id=None)
    return TriggerResponse(
        status="ok", message="Task triggered", session_id=fired.accepted.session_id, turn_id=fired.accepted.turn_id
    )
