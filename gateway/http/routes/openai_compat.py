"""`POST /v1/chat/completions`, OpenAI-compatible (streaming or not), onto the gateway's own sessions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec

from actors import events as evs
from actors.messages import SessionKey
from gateway.errors import AgentError, ValidationFailedError
from gateway.http.api import Ctx, endpoint
from gateway.http.sse import SSEResponse, sse_event
from gateway.http.turns import ensure_session, run_turn, start_and_follow
from storage.events import EventRow

SessionName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class ContentPart(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False  # a last chunk with `usage` and `choices: []`, as OpenAI sends


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    """Unknown OpenAI parameters (temperature, tools, …) are accepted and ignored: the provider decides."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1, max_length=1000)]
    model: Annotated[str, msgspec.Meta(max_length=200)] = "gateway"
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: SessionName | None = None  # the session name; or the `X-Session-Id` header


class Delta(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: Delta
    finish_reason: str | None


class AssistantMessage(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(msgspec.Struct, kw_only=True):
    index: int
    message: AssistantMessage
    finish_reason: str


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Chunk(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    # Asked for with `stream_options.include_usage`: the last chunk's counts, null on every other chunk (as OpenAI)
    usage: Usage | msgspec.UnsetType | None = msgspec.UNSET


def _usage(got: evs.TurnUsage | None) -> Usage:
    """The turn's usage as OpenAI counts it (what its provider reported, or the gateway's estimate)."""
    tokens_in = got.input_tokens if got is not None else 0
    tokens_out = got.output_tokens if got is not None else 0
    return Usage(prompt_tokens=tokens_in, completion_tokens=tokens_out, total_tokens=tokens_in + tokens_out)


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ChunkStream:
    """One turn's session events as `chat.completion.chunk` SSE events, ending with `[DONE]`."""

    def __init__(self, cid: str, created: int, model: str, *, include_usage: bool) -> None:
        self.cid, self.created, self.model, self.include_usage = cid, created, model, include_usage

    def chunk(self, delta: Delta, finish: str | None = None) -> bytes:
        body = Chunk(
            id=self.cid,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)],
            usage=None if self.include_usage else msgspec.UNSET,
        )
        return sse_event(body)

    async def chunks(self, events: AsyncIterator[EventRow]) -> AsyncIterator[bytes]:
        streamed = False
        ended: evs.TurnEnded | None = None
        async for row in events:
            match evs.typed(row):
                case evs.TextDelta(data=text):
                    streamed = True
                    yield self.chunk(Delta(content=text))
                case evs.Result(text=text) if not streamed:
                    yield self.chunk(Delta(content=text))
                case evs.Error(message=message):
                    yield sse_event({"error": {"code": "AGENT_ERROR", "message": message}})
                case evs.TurnEnded() as ended:
                    yield self.chunk(Delta(), "stop" if ended.state == "completed" else "error")
        if self.include_usage and ended is not None:
            usage = _usage(ended.usage if isinstance(ended.usage, evs.TurnUsage) else None)
            yield sse_event(Chunk(id=self.cid, created=self.created, model=self.model, choices=[], usage=usage))
        yield sse_event("[DONE]")


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(p.text or "" for p in message.content or [] if p.type == "text")


def _session_name(ctx: Ctx, req: ChatCompletionRequest) -> str:
    """Validated like the `user` field; raises msgspec.ValidationError for a bad header."""
    name = req.user or ctx.request.headers.get("x-session-id") or "openai"
    return msgspec.convert(name, SessionName)


@endpoint(
    "POST",
    "/v1/chat/completions",
    summary="OpenAI-compatible chat; the session comes from `user` or the `X-Session-Id` header",
    tag="openai",
    group="chat",
    body=ChatCompletionRequest,
    response=ChatCompletion,
    media="text/event-stream",
    errors=(422, 502, 504),
)
async def chat_completions(ctx: Ctx) -> Any:
    req: ChatCompletionRequest = ctx.body
    users = [m for m in req.messages if m.role == "user"]
    if not users or not _text(users[-1]).strip():
        message = "the last user message has no text"
        raise ValidationFailedError(message, details=[{"loc": ["body", "messages"], "message": message}])
    try:
        name = _session_name(ctx, req)
    except msgspec.ValidationError:
        message = "X-Session-Id must be 1-64 letters, digits, _ . -"
        raise ValidationFailedError(
            message, details=[{"loc": ["header", "X-Session-Id"], "message": message}]
        ) from None
    # The session keeps its own history, so only the newest user message is sent on.
    key = SessionKey("openai", f"{ctx.user.owner or 'admin'}.{name}")
    await ensure_session(ctx.runtime, key, ctx.user.owner)
    prompt = _text(users[-1])
    created = int(time.time())
    if not req.stream:
        outcome = await run_turn(ctx.runtime, key, prompt, timeout=600)
        if outcome.state != "completed":
            raise AgentError(f"the agent did not reply ({outcome.state}): {outcome.error or 'no detail'}")
        return ChatCompletion(
            id=f"chatcmpl-{outcome.accepted.turn_id}", created=created, model=req.model,
            choices=[Choice(index=0, message=AssistantMessage(content=outcome.text), finish_reason="stop")],
            usage=_usage(outcome.usage),
        )  # fmt: skip
    streams = ctx.rest.streams
    who = ctx.client_key
    streams.acquire(who)
    try:
        accepted, events = await start_and_follow(ctx.runtime, key, prompt)
    except BaseException:
        streams.release(who)
        raise
    cid = f"chatcmpl-{accepted.turn_id}"

    include_usage = req.stream_options is not None and req.stream_options.include_usage
    stream = ChunkStream(cid, created, req.model, include_usage=include_usage)

    # Cut short by shutdown: an error chunk and no `[DONE]`, so the client knows the answer is incomplete.
    farewell = sse_event(
        {"error": {"code": "SHUTTING_DOWN", "message": "the gateway is restarting; the turn was interrupted"}}
    )
    return SSEResponse(
        stream.chunks(events),
        on_close=lambda: streams.release(who),
        head=stream.chunk(Delta(role="assistant", content="")),
        shutdown=ctx.runtime.shutdown,
        farewell=farewell,
    )
