"""Every message the runtime's actors exchange: frozen msgspec Structs grouped by recipient."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Protocol, TypeVar

import msgspec

from actors.base import Reply, Stop
from storage.events import EventRow


class SessionKey(msgspec.Struct, frozen=True, order=True):
    """Which conversation: the transport (`api`, `telegram`, …), its chat, and an optional topic/channel."""

    transport: str
    chat_id: str
    topic_id: str = ""

    def __post_init__(self) -> None:
        if not self.transport or not self.chat_id:
            raise ValueError("a SessionKey needs a transport and a chat_id")

    def __str__(self) -> str:
        base = f"{self.transport}:{self.chat_id}"
        return f"{base}:{self.topic_id}" if self.topic_id else base


T_contra = TypeVar("T_contra", contravariant=True)


class Receivers(Protocol):
    @property
    def open_receive_channels(self) -> int: ...


class Sink(Protocol[T_contra]):
    """Where a publisher pushes items without waiting: a trio memory channel's sending side, or anything that
    answers the same three calls (a `/ws` connection keeps its session's events in its own deque).

    `send_nowait` raises trio.WouldBlock when full (the publisher then closes it: the subscriber resumes later) and
    trio.BrokenResourceError or trio.ClosedResourceError once the subscriber is gone.
    """

    def send_nowait(self, value: T_contra, /) -> None: ...

    def close(self) -> None: ...

    def statistics(self) -> Receivers: ...


class TurnAccepted(msgspec.Struct, frozen=True):
    session_id: str
    turn_id: str
    queued_behind: int


class Subscription(msgspec.Struct, frozen=True):
    """Answer to Subscribe: events to deliver first, then the live channel carries seq > `last_seq`."""

    session_id: str
    replay: list[EventRow]
    last_seq: int


# ---- to the router, and forwarded by it to the key's session ----


class Submit(msgspec.Struct, frozen=True):
    key: SessionKey
    text: str
    reply: Reply[TurnAccepted]
    # Runs in the same transaction that records the turn (the dispatcher marks its events fed with it).
    also: Callable[[sqlite3.Connection], None] | None = None


class Subscribe(msgspec.Struct, frozen=True):
    """Stream this session's events into `channel`; replay everything after `after_seq` first (None: live)."""

    key: SessionKey
    channel: Sink[EventRow]
    after_seq: int | None
    reply: Reply[Subscription]


class Unsubscribe(msgspec.Struct, frozen=True):
    key: SessionKey
    channel: Sink[EventRow]


class Abort(msgspec.Struct, frozen=True):
    """Stop the running turn and drop queued ones; answer how many processes were killed.

    With `only`, just the turns named there (a client that went away aborts its own turns, not another's).
    """

    key: SessionKey
    reply: Reply[int]
    only: frozenset[str] | None = None


class Resolve(msgspec.Struct, frozen=True):
    """Answer the session id bound to the key (creating the session if needed)."""

    key: SessionKey
    reply: Reply[str]


class Retire(msgspec.Struct, frozen=True):
    """Retire the key's session actor: it finishes its running and queued turns, stores their events, runs `then`
    in the store as its last act (e.g. deleting the session's rows), exits, and then answers `reply`.

    The router forgets the actor when it forwards this, so a later message for the key starts a new actor; that
    one waits until this one has exited (one actor per key at a time).
    """

    key: SessionKey
    reply: Reply[None]
    then: Callable[[sqlite3.Connection], object] | None = None


SessionRequest = Submit | Subscribe | Unsubscribe | Abort | Resolve


class Idle(msgspec.Struct, frozen=True):
    """From a session to the router: nothing to do after `received` messages; retire me if that is all.

    `incarnation` names which actor of the key sent it (the router numbers them), so a late Idle from an actor
    already retired is never taken for its successor's. `watched`: subscribers still listen, so the router keeps
    them (and where the session's numbering is) for the key's next actor, which wakes on the next request.
    """

    key: SessionKey
    received: int
    incarnation: int = 0
    watched: bool = False


RouterMsg = SessionRequest | Retire | Idle
SessionMsg = SessionRequest | Retire | Stop
