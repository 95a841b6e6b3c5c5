"""Messages from scripts: to a connector's chat (async or waiting for the reply) and the simple agent call."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Literal

import msgspec

from actors.events import TurnUsage
from actors.messages import SessionKey
from gateway.core import started
from gateway.errors import AgentError, ForbiddenError, NotFoundError, ValidationFailedError
from gateway.http.api import Ctx, endpoint
from gateway.http.routes.sessions import Channel
from gateway.http.turns import ensure_session, run_turn, submit
from storage import connectors as conn_db
from storage.clock import now_ms

ChatRef = Annotated[str, msgspec.Meta(pattern=r"^[^\s:]{1,128}$")] | int
Content = Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
Timeout = Annotated[float, msgspec.Meta(ge=1, le=600, description="seconds to wait for the reply")]


class MessageRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    channel: Channel
    chat_id: ChatRef
    content: Content
    topic_id: Annotated[str, msgspec.Meta(pattern=r"^[^\s]{0,128}$")] = ""
    accountId: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    timeout: Timeout = 120.0


class MessageResponse(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    message_id: str
    session_id: str
    queued_behind: int


class SyncResponse(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    reply: str
    session_id: str
    message_id: str


class AgentRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    message: Content
    session: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")] = "default"
    timeout: Timeout = 120.0


class AgentResponse(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    reply: str
    session: str
    session_id: str
    # {input_tokens, output_tokens, total_tokens, estimated, model}: `estimated` when the provider reported none
    usage: TurnUsage | None = None


def connector_transport(ctx: Ctx, channel: str, account: str | None = None) -> str:
    """The `kind:name` transport of the configured connector that `channel` (and the seed's `accountId`) name.

    `telegram` alone names the only telegram connector. Raises 404 `CHANNEL_NOT_FOUND` when no configured
    connector matches (nothing is stored and no turn runs), 422 when several do and none is named.
    """
    kind, _, name = channel.partition(":")
    name = name or account or ""
    service = ctx.runtime.connectors
    refs: list[str] = service.refs() if service is not None else []
    if not name:
        same = [ref.partition("/")[2] for ref in refs if ref.partition("/")[0] == kind]
        if len(same) > 1:
            raise ValidationFailedError(
                f"there are several {kind} connectors ({', '.join(same)}); name one with accountId",
                details=[{"loc": ["body", "accountId"], "message": f"one of {', '.join(same)}"}],
            )
        name = same[0] if same else ""
    if f"{kind}/{name}" not in refs:
        what = f"{kind}:{name}" if name else kind
        raise NotFoundError(
            f"no connector {what!r} is configured; GET /v1/runtime/connectors lists them (kind:name, or the kind "
            "and accountId); to ask the agent without a connector use /api/agent",
            code="CHANNEL_NOT_FOUND",
        )
    return f"{kind}:{name}"


async def _connector_key(ctx: Ctx, req: MessageRequest) -> SessionKey:
    # Admin only (see the endpoints): a connector chat belongs to people outside the gateway's user list.
    # The seed's `accountId` names the connector: its sessions are keyed by `kind:name`.
    transport = connector_transport(ctx, req.channel, req.accountId)
    key = SessionKey(transport, str(req.chat_id), req.topic_id)
    row = await ensure_session(ctx.runtime, key, ctx.user.owner)
    if not ctx.user.may_access(row.owner):
        raise ForbiddenError("that chat's session belongs to another user", code="SESSION_FORBIDDEN")
    await reply_through_connector(ctx, key, row.id)
    return key


async def reply_through_connector(ctx: Ctx, key: SessionKey, session_id: str) -> None:
    """A chat of a configured connector whose kind addresses chats (telegram, slack: `ConnectorKind.chat_address`)
    and that has no reply targets yet replies into that chat."""
    service = ctx.runtime.connectors
    target = None if service is None else service.chat_reply_target(key.transport, key.chat_id, key.topic_id)
    if target is None:
        return

    def txn(conn: sqlite3.Connection) -> None:
        # Targets set by the connector's own ingress (or over the API) are left as they are.
        if conn_db.get_reply_targets(conn, session_id) is None:
            conn_db.set_reply_targets(conn, session_id, [target], now_ms=now_ms())

    await ctx.store.call(txn)


@endpoint(
    "POST",
    "/api/message",
    summary="Send a message to a connector chat; the reply goes out through the connector",
    tag="messages",
    group="chat",
    auth="admin",
    body=MessageRequest,
    response=MessageResponse,
    status=202,
    errors=(403, 404, 422),
)
async def send_message(ctx: Ctx) -> MessageResponse:
    req: MessageRequest = ctx.body
    key = await _connector_key(ctx, req)
    accepted = await submit(ctx.runtime, key, req.content)
    background = started(ctx.runtime.services.background, "the background-turn notifier")
    background.watch(accepted.turn_id, title=f"Reply in {key}", source="message", owner=ctx.user.owner)
    return MessageResponse(
        message_id=accepted.turn_id, session_id=accepted.session_id, queued_behind=accepted.queued_behind
    )


@endpoint(
    "POST",
    "/api/message/sync",
    summary="Send a message to a connector chat and wait for the reply",
    tag="messages",
    group="chat",
    auth="admin",
    body=MessageRequest,
    response=SyncResponse,
    errors=(403, 404, 422, 502, 504),
)
async def send_message_sync(ctx: Ctx) -> SyncResponse:
    req: MessageRequest = ctx.body
    key = await _connector_key(ctx, req)
    outcome = await run_turn(ctx.runtime, key, req.content, timeout=req.timeout)
    if outcome.state != "completed":
        raise AgentError(f"the agent did not reply ({outcome.state}): {outcome.error or 'no detail'}")
    return SyncResponse(reply=outcome.text, session_id=outcome.accepted.session_id, message_id=outcome.accepted.turn_id)


@endpoint(
    "POST",
    "/api/agent",
    summary="Ask the agent and wait for the reply (`session` names your conversation)",
    tag="messages",
    group="chat",
    body=AgentRequest,
    response=AgentResponse,
    errors=(422, 502, 504),
)
async def agent(ctx: Ctx) -> AgentResponse:
    req: AgentRequest = ctx.body
    # Each user gets their own namespace of named sessions, so "default" is never shared between users.
    key = SessionKey("rest", f"{ctx.user.owner or 'admin'}.{req.session}")
    await ensure_session(ctx.runtime, key, ctx.user.owner)
    outcome = await run_turn(ctx.runtime, key, req.message, timeout=req.timeout)
    if outcome.state != "completed":
        raise AgentError(f"the agent did not reply ({outcome.state}): {outcome.error or 'no detail'}")
    return AgentResponse(
        reply=outcome.text, session=req.session, session_id=outcome.accepted.session_id, usage=outcome.usage
    )
