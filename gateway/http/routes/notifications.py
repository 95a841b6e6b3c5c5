"""Notifications over REST: list, unread count, mark read, the live SSE stream (users see theirs, admins all)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

import msgspec
import trio

from gateway.errors import ForbiddenError, InvalidRequestError, NotFoundError
from gateway.http.api import Ctx, Ok, endpoint
from gateway.http.routes.account import iso
from gateway.http.sse import SSEResponse, shutdown_event, sse_event
from storage import notifications as notes_db
from storage.notifications import NotificationRow


class NotificationQuery(msgspec.Struct, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    unread_only: bool = False


class Notification(msgspec.Struct, kw_only=True):
    id: str
    title: str
    body: str
    source: str
    read: bool
    created_at: str


class NotificationList(msgspec.Struct, kw_only=True):
    notifications: list[Notification]


class UnreadCount(msgspec.Struct, kw_only=True):
    count: int


class ReadAll(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    updated: int


def out(row: NotificationRow) -> Notification:
    return Notification(
        id=row.id,
        title=row.title,
        body=row.body,
        source=row.source,
        read=row.read,
        created_at=iso(row.created_at) or "",
    )


@endpoint(
    "GET",
    "/api/notifications",
    summary="Notifications, newest first",
    tag="notifications",
    query=NotificationQuery,
    response=NotificationList,
)
async def list_notifications(ctx: Ctx) -> NotificationList:
    q: NotificationQuery = ctx.query
    rows = await ctx.store.call(
        notes_db.list_, ctx.user.owner, all_owners=ctx.user.is_admin, limit=q.limit, unread_only=q.unread_only
    )
    return NotificationList(notifications=[out(r) for r in rows])


@endpoint(
    "GET",
    "/api/notifications/unread-count",
    summary="How many are unread",
    tag="notifications",
    response=UnreadCount,
)
async def unread_count(ctx: Ctx) -> UnreadCount:
    return UnreadCount(count=await ctx.store.call(notes_db.unread_count, ctx.user.owner, all_owners=ctx.user.is_admin))


@endpoint(
    "PUT",
    "/api/notifications/{id}/read",
    summary="Mark one read",
    tag="notifications",
    response=Ok,
    errors=(403, 404),
)
async def mark_read(ctx: Ctx) -> Ok:
    row = await ctx.store.call(notes_db.get, ctx.path("id"))
    if row is None:
        raise NotFoundError("no such notification", code="NOTIFICATION_NOT_FOUND")
    if not ctx.user.may_access(row.owner):
        raise ForbiddenError("this notification is another user's", code="NOTIFICATION_FORBIDDEN")
    await ctx.store.call(notes_db.mark_read, row.id)
    return Ok()


@endpoint(
    "POST",
    "/api/notifications/read-all",
    summary="Mark all read",
    tag="notifications",
    response=ReadAll,
)
async def read_all(ctx: Ctx) -> ReadAll:
    n = await ctx.store.call(notes_db.mark_all_read, ctx.user.owner, all_owners=ctx.user.is_admin)
    return ReadAll(updated=n)


# A stream resumed after a long absence catches up in pages of this many, each its own read.
CATCH_UP_PAGE = 200
_ZERO_ID = "0" * 32  # before every notification: the cursor of a caller who has none yet


def _resume_id(ctx: Ctx) -> str | None:
    raw = ctx.request.headers.get("last-event-id")
    if raw is None or raw == "":
        return None
    if len(raw) != 32 or any(c not in "0123456789abcdef" for c in raw):
        raise InvalidRequestError("Last-Event-ID must be the id of the last notification received (32 hex digits)")
    return raw


@endpoint(
    "GET",
    "/api/notifications/stream",
    summary="Your notifications (admins: all) as SSE `notification` events the moment each is made "
    "(`id` = the notification's id; `Last-Event-ID` sends what was missed first)",
    tag="notifications",
    media="text/event-stream",
    errors=(400, 429),
)
async def stream_notifications(ctx: Ctx) -> SSEResponse:
    resume = _resume_id(ctx)
    who = ctx.client_key
    streams = ctx.rest.note_streams
    streams.acquire(who)  # `limits.max_streams` of these per caller (429 past it), beside those of the chat streams
    user = ctx.user
    runtime = ctx.runtime

    async def pending(cursor: str) -> AsyncIterator[NotificationRow]:
        while True:
            rows = await ctx.store.read(
                notes_db.after, user.owner, all_owners=user.is_admin, after_id=cursor, limit=CATCH_UP_PAGE
            )
            for row in rows:
                yield row
            if len(rows) < CATCH_UP_PAGE:
                return
            cursor = rows[-1].id

    async def events() -> AsyncIterator[bytes]:
        cursor = resume
        while True:
            # Subscribed before the store is read: a notification stored meanwhile is either in that read or wakes
            # the wait below. The publish only wakes us; the rows (this caller's only) come from the store, so a
            # stream cut off for being slow, or resumed, loses nothing and never sees another user's.
            with runtime.notifications.subscribe() as wake:
                if cursor is None:
                    newest = await ctx.store.read(notes_db.newest_id, user.owner, all_owners=user.is_admin)
                    cursor = newest or _ZERO_ID
                    # The first event carries the cursor, so a client that reconnects resumes from here.
                    yield sse_event({"type": "ready", "cursor": cursor}, event="ready", id=cursor)
                async for row in pending(cursor):
                    cursor = row.id
                    yield sse_event({"type": "notification", "notification": out(row)}, event="notification", id=row.id)
                async for _ in wake:
                    while True:  # a burst is one read
                        try:
                            wake.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    async for row in pending(cursor):
                        cursor = row.id
                        yield sse_event(
                            {"type": "notification", "notification": out(row)}, event="notification", id=row.id
                        )

    return SSEResponse(
        events(), on_close=lambda: streams.release(who), shutdown=runtime.shutdown, farewell=shutdown_event()
    )
