"""The platform seed's session routes beside ours: `POST /api/sessions/{id}/delete` and the SSE list stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import trio

from gateway.http.api import Ctx, Ok, endpoint
from gateway.http.routes.sessions import ListQuery, ListSessionResponse, items, remove_session
from gateway.http.session_feed import feed_of
from gateway.http.sse import SSEResponse, shutdown_event, sse_event
from storage import session_views as views_db

# A burst of changes (many sessions' turns ending at once) becomes one list, not one per change.
COALESCE = 0.25


@endpoint(
    "POST",
    "/api/sessions/{id}/delete",
    summary="Stop and delete a session with its history (the same as DELETE /api/sessions/{key})",
    tag="sessions",
    response=Ok,
    errors=(403, 404),
)
async def delete_session_post(ctx: Ctx) -> Ok:
    return await remove_session(ctx, ctx.path("id"))


@endpoint(
    "POST",
    "/api/sessions/stream",
    summary="Your sessions (admins: all) as SSE `sessions` events: the list at once, then again whenever it changes",
    tag="sessions",
    query=ListQuery,
    media="text/event-stream",
    errors=(422, 429),
)
async def stream_sessions(ctx: Ctx) -> SSEResponse:
    q: ListQuery = ctx.query
    who = ctx.client_key
    streams = ctx.rest.streams
    streams.acquire(who)  # the same per-caller cap as the chat streams: 429 past `limits.max_streams`
    feed = feed_of(ctx.runtime)
    user = ctx.user

    async def lists() -> AsyncIterator[bytes]:
        sent = b""
        n = 0
        while True:
            changed = feed.changed  # before the read: a change during it wakes the next round
            rows = await ctx.store.read(
                views_db.list_for, user.owner, all_owners=user.is_admin, limit=q.limit, offset=q.offset
            )
            body = msgspec.json.encode(ListSessionResponse(sessions=await items(ctx, rows)))
            if body != sent:  # only a list that differs from the last one sent
                sent, n = body, n + 1
                yield sse_event(body.decode(), event="sessions", id=n)
            await changed.wait()
            await trio.sleep(COALESCE)

    return SSEResponse(
        lists(), on_close=lambda: streams.release(who), shutdown=ctx.runtime.shutdown, farewell=shutdown_event()
    )
