"""Notifications over REST: list, unread count, mark one or all read (users see theirs, admins all)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.errors import ForbiddenError, NotFoundError
from gateway.http.api import Ctx, Ok, endpoint
from gateway.http.routes.account import iso
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
