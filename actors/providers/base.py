"""The provider interface: start a turn, stream its events, abort it and report how many processes died."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from typing import Literal, Protocol, runtime_checkable

import msgspec

from actors.messages import SessionKey


class HistoryMessage(msgspec.Struct, frozen=True):
    role: str  # user | assistant | system
    content: str


class TurnRequest(msgspec.Struct, frozen=True):
    session_id: str
    key: SessionKey
    prompt: str
    history: Sequence[HistoryMessage] = ()
    model: str | None = None
    owner: str | None = None  # the session's owner (None: the gateway token's or a connector's): picks tools


class TextDelta(msgspec.Struct, frozen=True):
    text: str


class ToolActivity(msgspec.Struct, frozen=True):
    name: str


class SystemStatus(msgspec.Struct, frozen=True):
    text: str | None


class FinalText(msgspec.Struct, frozen=True):
    """The whole answer, when a provider knows it better than the concatenated deltas."""

    text: str


class Usage(msgspec.Struct, frozen=True):
    """Tokens the provider reports a turn (or one model call of it) used; several in one turn add up."""

    input_tokens: int
    output_tokens: int


ProviderEvent = TextDelta | ToolActivity | SystemStatus | FinalText | Usage


def estimate_tokens(text: str) -> int:
    """Tokens a text is worth when a provider reports none: ~4 characters a token (no tokenizer on a Pi)."""
    return math.ceil(len(text) / 4)


def estimate_usage(request: TurnRequest, output: str) -> Usage:
    """A turn's usage told from its text alone: the prompt and history in (4 tokens of framing a message), the
    answer out."""
    sent = [*(m.content for m in request.history), request.prompt]
    return Usage(sum(estimate_tokens(t) + 4 for t in sent), estimate_tokens(output))


class ProviderInfo(msgspec.Struct, frozen=True):
    name: str
    models: list[str] = msgspec.field(default_factory=list)
    default_model: str | None = None
    available: bool = True
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "models": self.models,
            "default_model": self.default_model,
            "available": self.available,
            "detail": self.detail,
        }


class ProbeResult(msgspec.Struct, frozen=True):
    """What trying the provider found: `ok` (it answered as it should), `error` (it answered, with an error: a
    refused key, a wrong path) or `unreachable` (no answer: refused, no such host, timed out); `detail` says which."""

    status: Literal["ok", "error", "unreachable"]
    detail: str


@runtime_checkable
class Probeable(Protocol):
    async def probe(self, timeout: float) -> ProbeResult:
        """Really try the provider (a short request, or a look for its command), within `timeout` seconds."""
        ...


class ProviderTurn(Protocol):
    def events(self) -> AsyncIterator[ProviderEvent]:
        """Yield the turn's events; raising an Exception ends the turn as failed."""
        ...

    async def abort(self) -> int:
        """Stop the turn's work at once; return how many OS processes were killed."""
        ...


class Provider(Protocol):
    name: str

    def info(self) -> ProviderInfo: ...

    def start_turn(self, request: TurnRequest) -> ProviderTurn: ...


class ProviderError(Exception):
    """A provider could not run a turn; the message is shown to the user."""
