"""Cron jobs over REST: list, create (cron expression or interval; a session or a connector chat), toggle, trigger."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

import msgspec

from actors.messages import SessionKey
from actors.scheduler import ScheduleError, Scheduler, check_cron, next_slot
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
from storage.cron import CronJob


class CreateCronRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    cron: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    interval_seconds: Annotated[int, msgspec.Meta(ge=1, le=366 * 86400)] | None = None
    session_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    connector: Channel | None = None
    chat_id: ChatId | None = None
    enabled: bool = True


class CronJobOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    cron: str | None
    interval_seconds: int | None
    session_id: str | None
    connector: str | None
    chat_id: str | None
    prompt: str
    enabled: bool
    next_fire_at: str | None
    last_fire_at: str | None
    created_at: str


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
        session_id=job.session_id,
        connector=job.connector,
        chat_id=job.chat_id,
        prompt=job.prompt,
        enabled=job.enabled,
        next_fire_at=iso(job.next_fire_at),
        last_fire_at=iso(job.last_fire_at),
        created_at=iso(job.created_at) or "",
    )


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
    summary="Create a job: `cron` (5 fields, UTC) or `interval_seconds`; target `session_id`, `connector`+`chat_id`, "
    "or neither (a new session of the job's own)",
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
    if req.cron is not None:
        try:
            check_cron(req.cron)
        except ScheduleError as exc:
            raise _invalid("cron", str(exc)) from None
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
        next_fire_at=None, last_fire_at=None, created_at=ts, updated_at=ts,
    )  # fmt: skip
    scheduler = scheduler_of(ctx)
    if req.enabled:
        job = dataclasses.replace(job, next_fire_at=next_slot(job, scheduler.now_ms()))
    own = session_id is None and connector is None
    title = f"Cron: {req.name or req.prompt}"[:200]

    def txn(conn: Any) -> CronJob:
        made = job
        if own:
            # No target: the job gets a session of its own, its creator's, where its runs can be read.
            row = sess_db.get_or_create_session(conn, "cron", job_id, "", now_ms=ts, owner=ctx.user.owner)
            sess_db.rename_session(conn, row.id, title, now_ms=ts)
            made = dataclasses.replace(job, session_id=row.id)
        return cron_db.create_job(conn, made)

    job = await ctx.store.call(txn)
    scheduler.wake()
    return out(job)


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
