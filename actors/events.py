"""Session events as msgspec tagged structs (one per kind), and the one owner of each turn's outcome.

The session actor emits these; storage keeps an event's payload (its fields, without `type`) as `EventRow.data`;
every surface (/ws v1 and v2, SSE, the OpenAI-compatible stream, connectors, notifications) reads the typed event
back with `typed`. Field order is the wire's: the frames the surfaces build from them are byte for byte the ones
clients already know (tests/gateway/data/event_frames.json). `usage` and `started` are absent (UNSET) when the
event has none, as before.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec

from storage.events import EventRow


class TurnUsage(msgspec.Struct, frozen=True):
    """A turn's tokens: what its provider reported, or the gateway's estimate (`estimated`)."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    estimated: bool
    model: str


class Event(msgspec.Struct, frozen=True, tag_field="type"):
    """Base of every session event kind; `type` on the wire is the kind's tag."""


class TurnStarted(Event, frozen=True, tag="turn_started"):
    turn_id: str
    text: str


class TextDelta(Event, frozen=True, tag="text_delta"):
    data: str


class ToolActivity(Event, frozen=True, tag="tool_activity"):
    data: str


class SystemStatus(Event, frozen=True, tag="system_status"):
    data: str | None  # None: a provider's status without text (sent as null)


class Result(Event, frozen=True, tag="result"):
    text: str
    stream_fallback: bool = False
    files: list[dict[str, Any]] = msgspec.field(default_factory=list)
    usage: TurnUsage | msgspec.UnsetType = msgspec.UNSET


class Error(Event, frozen=True, tag="error"):
    code: str  # AGENT_ERROR, or INTERRUPTED for a turn a stop or crash cut off
    message: str


class TurnEnded(Event, frozen=True, tag="turn_ended"):
    turn_id: str
    state: str  # completed | failed | aborted | interrupted
    started: bool | msgspec.UnsetType = msgspec.UNSET  # False: a queued turn dropped before it started
    usage: TurnUsage | msgspec.UnsetType = msgspec.UNSET


SessionEvent = TurnStarted | TextDelta | ToolActivity | SystemStatus | Result | Error | TurnEnded
KINDS: tuple[type[Event], ...] = (TurnStarted, TextDelta, ToolActivity, SystemStatus, Result, Error, TurnEnded)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SessionEvent)


def kind_of(event: Event) -> str:
    """The event's `type` tag."""
    return str(event.__struct_config__.tag)


_BY_TAG: dict[str, type[Event]] = {str(k.__struct_config__.tag): k for k in KINDS}


def payload(event: Event) -> dict[str, Any]:
    """What storage keeps of `event` (its fields in order, unset ones left out, without `type`)."""
    if type(event) is TextDelta:  # most events of a turn: spared the generic conversion
        return {"data": event.data}
    data: dict[str, Any] = msgspec.to_builtins(event)
    del data["type"]
    return data


def typed(row: EventRow) -> SessionEvent | None:
    """A stored or live event row as its struct (None: a kind this gateway does not know, or a malformed one)."""
    kind = _BY_TAG.get(row.type)
    if kind is None:
        return None
    try:
        # By its tag, not through the union: converting to a union is some 25 times slower.
        event: SessionEvent = msgspec.convert(row.data, kind)  # type: ignore[assignment]
        return event
    except msgspec.ValidationError:
        return None


def encode(event: Event) -> bytes:
    """The event as JSON, `type` first."""
    return _encoder.encode(event)


def decode(raw: bytes) -> SessionEvent:
    """Inverse of `encode`: any kind, told apart by its `type` tag."""
    return _decoder.decode(raw)


class TurnOutcome(msgspec.Struct, frozen=True):
    """How a turn ended: its state, its reply (or the error's text) and its usage."""

    session_id: str
    turn_id: str
    state: str
    text: str = ""
    error: str | None = None
    usage: TurnUsage | None = None


class TurnOutcomes:
    """The one owner of turns' outcomes, fed every session event before any other listener.

    A turn's `result` or `error` is held until its `turn_ended` (shown right after them, in the same round), then
    the outcome is kept for the last `keep` ended turns only, so a reader that learns a turn id late (a fast turn
    ends before its submitter watches it) still finds it, and nothing grows with the number of turns. A reader
    that finds nothing for a turn storage says has ended reads its end from the turn's row instead.
    """

    def __init__(self, *, keep: int = 64) -> None:
        self.keep = keep
        self._partial: OrderedDict[str, tuple[str, str | None]] = OrderedDict()  # turn -> (text, error)
        self._ended: OrderedDict[str, TurnOutcome] = OrderedDict()

    def on_event(self, row: EventRow) -> TurnOutcome | None:
        """Take one session event; return the turn's outcome when this event ended it."""
        turn = row.turn_id
        if turn is None or row.type not in ("result", "error", "turn_ended"):
            return None
        event = typed(row)
        if isinstance(event, Result):
            self._hold(turn, (event.text, None))
        elif isinstance(event, Error):
            self._hold(turn, ("", event.message))
        elif isinstance(event, TurnEnded):
            text, error = self._partial.pop(turn, ("", None))
            usage = event.usage if isinstance(event.usage, TurnUsage) else None
            outcome = TurnOutcome(row.session_id, turn, event.state, text, error, usage)
            self._ended[turn] = outcome
            while len(self._ended) > self.keep:
                self._ended.popitem(last=False)
            return outcome
        return None

    def _hold(self, turn: str, value: tuple[str, str | None]) -> None:
        self._partial[turn] = value
        while len(self._partial) > self.keep:  # a turn_ended that never came (never expected): bounded anyway
            self._partial.popitem(last=False)

    def get(self, turn_id: str) -> TurnOutcome | None:
        """The outcome of an ended turn still remembered (None: still running, or forgotten)."""
        return self._ended.get(turn_id)

    def __len__(self) -> int:
        return len(self._ended) + len(self._partial)
