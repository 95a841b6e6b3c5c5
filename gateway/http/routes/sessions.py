"""Sessions over REST: create, list, get, delete, rename, stop, unread, files, and the turn streamed as SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType
from starlette.responses import Response

from actors.messages import SessionKey
from gateway.core import Runtime
from gateway.errors import ForbiddenError, InvalidRequestError, NotFoundError, ValidationFailedError
from gateway.http.api import Ctx, Ok, endpoint
from gateway.http.responses import JSON
from gateway.http.routes.account import iso
from gateway.http.routes.app_config import ModelName, ProviderName
from gateway.http.session_feed import sessions_changed
from gateway.http.sse import SSEResponse, shutdown_event, sse_event
from gateway.http.turns import abort, ensure_session, follow, retire, start_and_follow
from storage import events as events_db
from storage import files as files_db
from storage import session_views as views_db
from storage import sessions as sess_db
from storage.clock import now_ms
from storage.events import EventRow
from storage.ids import new_id
from storage.sessions import SessionRow

# A transport, optionally with a connector's name: connectors' sessions use `kind:name` (e.g. telegram:mybot).
Channel = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z][a-z0-9_\-]{0,31}(:[A-Za-z0-9_.\-]{1,64})?$",
        description="e.g. webchat, or a connector's transport such as telegram:mybot",
    ),
]
ChatId = Annotated[str, msgspec.Meta(pattern=r"^[^\s:]{1,128}$")]
SessionStatus = Literal["pending", "running", "waiting", "completed"]


class CreateSessionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    channel: Channel = "webchat"
    chat_id: ChatId | None = None
    title: Annotated[str, msgspec.Meta(max_length=200)] = ""
    # The session's own provider and model (one of `GET /api/providers`); absent or null: the gateway default.
    provider: ProviderName | None = None
    model: ModelName | None = None
    # The seed's agent: here the agent is a provider (`GET /api/providers`). The session runs on it (a pin) and its
    # key carries it as the topic, so one chat id has one session per agent.
    agentId: ProviderName | None = None


class SessionItem(msgspec.Struct, kw_only=True):
    session_id: str
    key: str
    title: str
    # What to call it: the title when one was given, else its first user message (whitespace collapsed, cut to
    # TITLE_CHARS with "…"), else "" (a session nothing was said in yet).
    display_title: str
    latest_message: str | None
    latest_message_at: str | None
    status: SessionStatus
    unread_message_count: int
    created_at: str
    last_seq: int
    provider: str | None  # the session's pin; null: it follows the gateway default at each turn
    model: str | None
    effective_provider: str  # what its next turn uses
    effective_model: str


class CreateSessionResponse(SessionItem, kw_only=True):
    pass


class ListSessionResponse(msgspec.Struct, kw_only=True):
    sessions: list[SessionItem]


class ListQuery(msgspec.Struct, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    offset: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0  # le: SQLite's largest integer


class UpdateSessionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every field optional: absent keeps the value; null `provider`/`model` go back to the gateway default."""

    title: Annotated[str, msgspec.Meta(max_length=200)] | UnsetType = UNSET
    provider: ProviderName | UnsetType | None = UNSET
    model: ModelName | UnsetType | None = UNSET


class ChatRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    files: Annotated[list[str], msgspec.Meta(max_length=20)] = []


class StopResponse(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    killed: int


class FileInfo(msgspec.Struct, kw_only=True):
    id: str
    filename: str
    extension: str
    mime_type: str
    size: int
    key: str
    session_id: str | None
    created_at: str


class FileListResponse(msgspec.Struct, kw_only=True):
    files: list[FileInfo]


TITLE_CHARS = 80


def display_title(title: str, first_message: str | None) -> str:
    if title.strip():
        return title
    text = " ".join((first_message or "").split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def item(row: SessionRow, runtime: Runtime, first_message: str | None = None) -> SessionItem:
    status = row.status if row.status in ("pending", "running", "waiting", "completed") else "completed"
    provider, model = runtime.effective(row.provider, row.model)
    return SessionItem(
        session_id=row.id,
        key=str(SessionKey(row.transport, row.chat_id, row.topic_id)),
        title=row.title,
        display_title=display_title(row.title, first_message),
        latest_message=row.latest_message,
        latest_message_at=iso(row.latest_message_at),
        status=status,  # type: ignore[arg-type]
        unread_message_count=row.unread,
        created_at=iso(row.created_at) or "",
        last_seq=row.last_seq,
        provider=row.provider,
        model=row.model,
        effective_provider=provider,
        effective_model=model,
    )


async def items(ctx: Ctx, rows: list[SessionRow]) -> list[SessionItem]:
    """The sessions as the API shows them, each with its display title (one read for all of them)."""
    untitled = [r.id for r in rows if not r.title.strip()]
    firsts = await ctx.store.read(views_db.first_user_messages, untitled) if untitled else {}
    return [item(r, ctx.runtime, firsts.get(r.id)) for r in rows]


def file_info(row: files_db.FileRow) -> FileInfo:
    return FileInfo(
        id=row.id,
        filename=row.filename,
        extension=row.extension,
        mime_type=row.mime_type,
        size=row.size,
        key=row.key,
        session_id=row.session_id,
        created_at=iso(row.created_at) or "",
    )


async def owned_session(ctx: Ctx, ref: str) -> SessionRow:
    """Find a session by id or by key (`transport:chat_id[:topic]`, connector keys such as `telegram:bot:555`
    included): 404 when absent, 403 when not the caller's."""
    row = await ctx.store.read(sess_db.find_by_ref, ref)
    if row is None:
        raise NotFoundError(f"no session {ref!r}", code="SESSION_NOT_FOUND")
    if not ctx.user.may_access(row.owner):
        raise ForbiddenError("this session belongs to another user", code="SESSION_FORBIDDEN")
    return row


def check_provider(runtime: Runtime, provider: str | None, *, field: str = "provider") -> None:
    """422 for a provider this gateway does not run (the names `GET /api/providers` lists)."""
    if provider is not None and provider not in runtime.providers:
        known = ", ".join(sorted(runtime.providers))
        raise ValidationFailedError(
            f"unknown {field} {provider!r}; use one of {known}, or null for the gateway default",
            details=[{"loc": ["body", field], "message": f"one of {known}"}],
        )


def key_of(row: SessionRow) -> SessionKey:
    return SessionKey(row.transport, row.chat_id, row.topic_id)


@endpoint(
    "POST",
    "/api/sessions",
    summary="Create a session, or reuse the one with this channel and chat_id, or (no chat_id, title or pin) "
    "your untouched one",
    tag="sessions",
    body=CreateSessionRequest,
    response=CreateSessionResponse,
    status=201,
    also={200: CreateSessionResponse},
    errors=(403, 422),
)
async def create_session(ctx: Ctx) -> Response:
    req: CreateSessionRequest = ctx.body
    provider = req.provider
    if req.agentId is not None:
        if req.provider is not None and req.provider != req.agentId:
            raise ValidationFailedError(
                "agentId and provider name different agents; give one of them",
                details=[{"loc": ["body", "agentId"], "message": f"must equal provider ({req.provider})"}],
            )
        check_provider(ctx.runtime, req.agentId, field="agentId")
        provider = req.agentId
    check_provider(ctx.runtime, provider)
    if req.channel != "webchat" and not ctx.user.is_admin:
        # Otherwise a user could claim a connector chat's session before its first message and read it.
        raise ForbiddenError("only an admin can open a session on a connector's chat", code="CHANNEL_FORBIDDEN")
    topic = req.agentId or ""
    if req.chat_id is None and not req.title and req.provider is None and req.model is None:
        # The seed's `POST /api/sessions {}` hands back the caller's session that was never used rather than
        # piling up empty ones (a title or a pin asks for a session of its own).
        found = await ctx.store.call(views_db.empty_session_of, ctx.user.owner, req.channel, topic, provider)
        if found is not None:
            return JSON((await items(ctx, [found]))[0], status_code=200)
    key = SessionKey(req.channel, req.chat_id or new_id(), topic)
    row = await ensure_session(ctx.runtime, key, ctx.user.owner)
    if not ctx.user.may_access(row.owner):
        raise ForbiddenError("that chat's session belongs to another user", code="SESSION_FORBIDDEN")
    if req.title:
        await ctx.store.call(sess_db.rename_session, row.id, req.title, now_ms=now_ms())
    if provider is not None or req.model is not None:
        await ctx.store.call(sess_db.set_pin, row.id, provider=provider, model=req.model, now_ms=now_ms())
    if req.title or provider is not None or req.model is not None:
        row = await owned_session(ctx, row.id)
    sessions_changed(ctx.runtime)
    return JSON((await items(ctx, [row]))[0], status_code=201)


@endpoint(
    "GET",
    "/api/sessions",
    summary="List your sessions (admins: all)",
    tag="sessions",
    query=ListQuery,
    response=ListSessionResponse,
)
async def list_sessions(ctx: Ctx) -> ListSessionResponse:
    q: ListQuery = ctx.query
    rows = await ctx.store.read(
        views_db.list_for, ctx.user.owner, all_owners=ctx.user.is_admin, limit=q.limit, offset=q.offset
    )
    return ListSessionResponse(sessions=await items(ctx, rows))


@endpoint(
    "GET",
    "/api/sessions/{key}",
    summary="One session, by id or key",
    tag="sessions",
    response=SessionItem,
    errors=(403, 404),
)
async def get_session(ctx: Ctx) -> SessionItem:
    return (await items(ctx, [await owned_session(ctx, ctx.path("key"))]))[0]


@endpoint(
    "DELETE",
    "/api/sessions/{key}",
    summary="Stop and delete a session with its history",
    tag="sessions",
    response=Ok,
    errors=(403, 404),
)
async def delete_session(ctx: Ctx) -> Ok:
    return await remove_session(ctx, ctx.path("key"))


async def remove_session(ctx: Ctx, ref: str) -> Ok:
    """Stop the session's turn, retire its actor, then delete it with its history (by id or key)."""
    row = await owned_session(ctx, ref)
    await abort(ctx.runtime, key_of(row))
    # Deleted by the session's actor as its last act: a message racing this delete never writes under the old id.
    await retire(ctx.runtime, key_of(row), then=partial(sess_db.delete_session, session_id=row.id))
    sessions_changed(ctx.runtime)
    return Ok()


@endpoint(
    "PUT",
    "/api/chat/sessions/{id}",
    summary="Rename a session and/or pin its provider and model (null: follow the gateway default)",
    tag="sessions",
    body=UpdateSessionRequest,
    response=SessionItem,
    errors=(403, 404, 422),
)
async def update_session(ctx: Ctx) -> SessionItem:
    req: UpdateSessionRequest = ctx.body
    if all(isinstance(v, UnsetType) for v in (req.title, req.provider, req.model)):
        raise ValidationFailedError("nothing to change: give a title, a provider or a model (null: the default)")
    row = await owned_session(ctx, ctx.path("id"))
    provider = row.provider if isinstance(req.provider, UnsetType) else req.provider
    model = row.model if isinstance(req.model, UnsetType) else req.model
    check_provider(ctx.runtime, None if isinstance(req.provider, UnsetType) else provider)
    if not isinstance(req.title, UnsetType):
        await ctx.store.call(sess_db.rename_session, row.id, req.title, now_ms=now_ms())
    if (provider, model) != (row.provider, row.model):
        # Read by the session at its next turn's start: a running turn keeps the provider it began with.
        await ctx.store.call(sess_db.set_pin, row.id, provider=provider, model=model, now_ms=now_ms())
    sessions_changed(ctx.runtime)
    return (await items(ctx, [await owned_session(ctx, row.id)]))[0]


@endpoint(
    "POST",
    "/api/sessions/{id}/stop",
    summary="Stop the running turn and drop queued ones",
    tag="sessions",
    response=StopResponse,
    errors=(403, 404),
)
async def stop_session(ctx: Ctx) -> StopResponse:
    row = await owned_session(ctx, ctx.path("id"))
    return StopResponse(killed=await abort(ctx.runtime, key_of(row)))


@endpoint(
    "POST",
    "/api/sessions/{id}/clear-unread-message-count",
    summary="Mark a session read",
    tag="sessions",
    response=Ok,
    errors=(403, 404),
)
async def clear_unread(ctx: Ctx) -> Ok:
    row = await owned_session(ctx, ctx.path("id"))
    await ctx.store.call(views_db.clear_unread, row.id)
    return Ok()


@endpoint(
    "GET",
    "/api/sessions/{id}/files",
    summary="Files attached to a session",
    tag="sessions",
    response=FileListResponse,
    errors=(403, 404),
)
async def session_files(ctx: Ctx) -> FileListResponse:
    row = await owned_session(ctx, ctx.path("id"))
    return FileListResponse(files=[file_info(f) for f in await ctx.store.call(files_db.files_of_session, row.id)])


def event_payload(event: EventRow) -> dict[str, object]:
    return {"type": event.type, "seq": event.seq, "turn_id": event.turn_id, **event.data}


def last_event_id(ctx: Ctx) -> int | None:
    raw = ctx.request.headers.get("last-event-id")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidRequestError("Last-Event-ID must be the number of the last event received")
    return int(raw)


async def _attachments(ctx: Ctx, file_ids: list[str], session_id: str) -> str:
    """Check each attached file is the caller's (403 otherwise) and describe them for the agent."""
    lines = []
    for fid in file_ids:
        row = await ctx.store.call(files_db.get_file, fid)
        if row is None:
            raise NotFoundError(f"no file {fid!r}", code="FILE_NOT_FOUND")
        if not ctx.user.may_access(row.owner):
            raise ForbiddenError(f"file {fid!r} belongs to another user", code="FILE_FORBIDDEN")
        lines.append(f"[attached file: {row.filename} ({row.mime_type}, {row.size} bytes), id {row.id}]")
    if file_ids:
        await ctx.store.call(files_db.attach, file_ids, session_id)
    return ("\n" + "\n".join(lines)) if lines else ""


@endpoint(
    "POST",
    "/api/sessions/{id}/chat",
    summary="Send a message and stream the turn as SSE (`id` = event seq; `Last-Event-ID` resumes without resending)",
    tag="sessions",
    group="chat",
    body=ChatRequest,
    media="text/event-stream",
    errors=(403, 404, 422),
)
async def chat(ctx: Ctx) -> SSEResponse:
    row = await owned_session(ctx, ctx.path("id"))
    key = key_of(row)
    resume_after = last_event_id(ctx)
    who = ctx.client_key
    streams = ctx.rest.streams
    streams.acquire(who)
    head: bytes | None = None
    try:
        if resume_after is not None:
            source = _resume(ctx, row, key, resume_after)
        else:
            req: ChatRequest = ctx.body
            text = req.message + await _attachments(ctx, req.files, row.id)
            accepted, events = await start_and_follow(ctx.runtime, key, text)
            source = _encode(events)
            # Sent before anything else, even when a shutdown ends the stream at once: the client learns its turn.
            head = sse_event(
                {
                    "type": "turn_accepted",
                    "session_id": accepted.session_id,
                    "turn_id": accepted.turn_id,
                    "queued_behind": accepted.queued_behind,
                },
                event="turn_accepted",
            )
    except BaseException:
        streams.release(who)
        raise
    return SSEResponse(
        source,
        on_close=lambda: streams.release(who),
        head=head,
        shutdown=ctx.runtime.shutdown,
        farewell=shutdown_event(),
    )


async def _encode(events: AsyncIterator[EventRow]) -> AsyncIterator[bytes]:
    async for event in events:
        yield sse_event(event_payload(event), event=event.type, id=event.seq)


async def _resume(ctx: Ctx, row: SessionRow, key: SessionKey, after: int) -> AsyncIterator[bytes]:
    """Replay what the client missed, then follow live until every turn in flight has ended."""
    if after >= row.last_seq and not await ctx.store.call(views_db.has_running_turn, row.id):
        return
    open_turns: set[str] = set()
    async for event in follow(ctx.runtime, key, after):
        yield sse_event(event_payload(event), event=event.type, id=event.seq)
        if event.type == "turn_started" and event.turn_id:
            open_turns.add(event.turn_id)
        elif event.type == "turn_ended":
            open_turns.discard(event.turn_id or "")
            if not open_turns and not await ctx.store.call(views_db.has_running_turn, row.id):
                return


class EventsQuery(msgspec.Struct, kw_only=True):
    after: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0  # le: SQLite's largest integer
    limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 1000


class EventsResponse(msgspec.Struct, kw_only=True):
    events: list[dict[str, Any]]
    last_seq: int
    more: bool


@endpoint(
    "GET",
    "/api/sessions/{id}/events",
    summary="The session's stored events after a seq (its history, user prompts included), in order",
    tag="sessions",
    query=EventsQuery,
    response=EventsResponse,
    errors=(403, 404),
)
async def session_events(ctx: Ctx) -> EventsResponse:
    # The web UI draws its history from here (v1 `/ws` frames carry no user prompts), then resumes `/ws` from
    # the last seq it got, so nothing is shown twice or lost between the two.
    q: EventsQuery = ctx.query
    row = await owned_session(ctx, ctx.path("id"))
    rows = await ctx.store.read(events_db.events_after, row.id, q.after, limit=q.limit + 1)
    return EventsResponse(
        events=[event_payload(e) for e in rows[: q.limit]], last_seq=row.last_seq, more=len(rows) > q.limit
    )
