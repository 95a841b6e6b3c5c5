"""Token usage over REST: sums per day, model, session or user (yours; admins everyone's), and the daily caps."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from typing import Annotated, Literal

import msgspec

from actors.messages import SessionKey
from gateway.errors import ForbiddenError, NotFoundError, ValidationFailedError
from gateway.http.api import Ctx, endpoint
from gateway.http.routes.account import iso
from storage import usage as usage_db
from storage import users as users_db
from storage.clock import now_ms
from storage.usage import ALL, DAY_MS, CapPolicy, UsageRow

log = logging.getLogger("gateway.usage")

Day = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$", description="a UTC day, YYYY-MM-DD")]
MAX_CAP = 2**53  # JSON's exact integers: a client's mistake (a 422), never a 500
NO_ACCOUNT = "none"  # `?user=none`: turns of no account (the gateway token's, connectors')


class UsageQuery(msgspec.Struct, kw_only=True):
    group: Literal["day", "model", "session", "user"] = "day"
    from_: Day | None = msgspec.field(default=None, name="from")  # first day counted (UTC)
    to: Day | None = None  # last day counted, inclusive
    user: Annotated[str, msgspec.Meta(max_length=64)] | None = None  # admins: one account's (`none`: no account's)
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 400


class UsageSums(msgspec.Struct, kw_only=True):
    key: str | None  # the day, model, session id or user id (null: turns of no account)
    turns: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    estimated_turns: int  # turns whose provider reported nothing: counted at ~4 characters a token
    # group=session only: the session's title, else its key; null when the session was deleted (its usage stays)
    label: str | msgspec.UnsetType | None = msgspec.UNSET


class Today(msgspec.Struct, kw_only=True):
    used: int  # tokens in and out since midnight UTC
    cap: int | None  # null: no cap
    resets_at: str


class UsageResponse(msgspec.Struct, kw_only=True):
    group: str
    user: str | None  # whose turns: an account's id, `none`, or null for everyone's
    rows: list[UsageSums]
    total: UsageSums
    today: Today | None  # for one account (or `none`): their day against their cap


class CapRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    daily_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_CAP)] | None  # null: the default applies


class CapResponse(msgspec.Struct, kw_only=True):
    user_id: str
    daily_tokens: int | None  # the account's own cap
    effective: int | None  # what applies: its own, else the default (null: none)


class CapsResponse(msgspec.Struct, kw_only=True):
    caps: dict[str, int]  # accounts with a cap of their own
    default: int | None  # `[usage] daily_token_cap`, for every other account
    unowned: int | None  # `[usage] unowned_daily_token_cap`, for turns of no account


def _sums(row: UsageRow, label: str | msgspec.UnsetType | None = msgspec.UNSET) -> UsageSums:
    return UsageSums(
        label=label,
        key=row.key,
        turns=row.turns,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        total_tokens=row.total_tokens,
        estimated_turns=row.estimated_turns,
    )


def _day_ms(day: str, field: str) -> int:
    try:
        parsed = dt.date.fromisoformat(day)
    except ValueError:
        raise ValidationFailedError(f"{field}: {day!r} is not a day (YYYY-MM-DD)", details=[{"field": field}]) from None
    return int(dt.datetime(parsed.year, parsed.month, parsed.day, tzinfo=dt.UTC).timestamp() * 1000)


def _policy(ctx: Ctx) -> CapPolicy:
    u = ctx.runtime.config.usage
    return CapPolicy(u.daily_token_cap, u.unowned_daily_token_cap)


@endpoint(
    "GET",
    "/api/usage",
    summary="Tokens in and out, summed per day (UTC), model, session or user; yours (admins: everyone's or `user`)",
    tag="usage",
    query=UsageQuery,
    response=UsageResponse,
    errors=(401, 403, 422),
)
async def get_usage(ctx: Ctx) -> UsageResponse:
    q: UsageQuery = ctx.query
    principal = ctx.user
    owner: str | object | None
    if q.user is not None and not principal.is_admin and q.user != principal.user_id:
        raise ForbiddenError("only an admin sees another account's usage")
    if q.user is not None:
        owner = None if q.user == NO_ACCOUNT else q.user
    elif principal.is_admin:
        owner = ALL
    else:
        owner = principal.user_id
    from_ms = _day_ms(q.from_, "from") if q.from_ is not None else None
    to_ms = _day_ms(q.to, "to") + DAY_MS if q.to is not None else None
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise ValidationFailedError("`to` is before `from`", details=[{"field": "to"}])
    policy = _policy(ctx)
    ts = now_ms()

    def read(conn: sqlite3.Connection) -> tuple[list[UsageRow], UsageRow, Today | None, dict[str, str]]:
        rows, total = usage_db.summarize(conn, q.group, owner=owner, from_ms=from_ms, to_ms=to_ms, limit=q.limit)
        labels: dict[str, str] = {}
        if q.group == "session":
            named = usage_db.sessions_named(conn, [r.key for r in rows if r.key is not None])
            labels = {sid: title.strip() or str(SessionKey(*key)) for sid, (title, *key) in named.items()}
        today = None
        if owner is not ALL:
            who = owner if isinstance(owner, str) else None
            today = Today(
                used=usage_db.used_today(conn, who, now_ms=ts),
                cap=usage_db.cap_for(conn, who, policy),
                resets_at=iso(usage_db.day_start(ts) + DAY_MS) or "",
            )
        return rows, total, today, labels

    rows, total, today, labels = await ctx.store.read(read)
    shown = None if owner is ALL else (owner if isinstance(owner, str) else NO_ACCOUNT)
    sums = [_sums(r, labels.get(r.key or "")) if q.group == "session" else _sums(r) for r in rows]
    return UsageResponse(group=q.group, user=shown, rows=sums, total=_sums(total), today=today)


@endpoint(
    "GET",
    "/api/admin/usage-caps",
    summary="Daily token caps: each account's own, the default and the one for turns of no account",
    tag="usage",
    auth="admin",
    response=CapsResponse,
    errors=(401, 403),
)
async def list_caps(ctx: Ctx) -> CapsResponse:
    policy = _policy(ctx)
    return CapsResponse(caps=await ctx.store.read(usage_db.all_caps), default=policy.default, unowned=policy.unowned)


@endpoint(
    "PUT",
    "/api/admin/users/{user_id}/usage-cap",
    summary="Set an account's daily token cap (null: the default applies); an admin account's: the gateway token only",
    tag="usage",
    auth="admin",
    body=CapRequest,
    response=CapResponse,
    errors=(401, 403, 404, 422),
)
async def set_cap(ctx: Ctx) -> CapResponse:
    req: CapRequest = ctx.body
    user = await ctx.store.call(users_db.get_user, ctx.path("user_id"))
    if user is None:
        raise NotFoundError("no such user", code="USER_NOT_FOUND")
    if user.role == "super_admin" and not ctx.user.is_owner and user.id != ctx.user.user_id:
        raise ForbiddenError(
            "an admin account's cap can only be set by the owner (the gateway token)", code="CANNOT_MODIFY_ADMIN"
        )
    await ctx.store.call(usage_db.set_cap, user.id, req.daily_tokens, now_ms=now_ms())
    log.info("user %s daily token cap -> %s, by %s", user.id, req.daily_tokens, ctx.user.user_id or "the gateway token")
    policy = _policy(ctx)
    effective = req.daily_tokens if req.daily_tokens is not None else policy.default
    return CapResponse(user_id=user.id, daily_tokens=req.daily_tokens, effective=effective)
