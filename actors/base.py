"""Mailboxes, addresses, one-shot replies and `ask()`, the request/reply helper that always times out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec
import trio

M = TypeVar("M")
T = TypeVar("T")


class ActorError(Exception):
    """Base of the runtime's errors."""


class BusyError(ActorError):
    """The recipient's mailbox is full; the caller should retry later or answer 'busy'."""


class DeadActorError(ActorError):
    """The recipient has stopped for good; its mailbox is closed."""


class AskTimeoutError(ActorError):
    """No actor took the request within the timeout given to `ask()`: it was withdrawn and will never run."""


class TemporaryFailure(Exception):
    """Something the actor needs refused for now (storage cannot write, or stalls): not a bug in the actor.

    A supervisor waits such a crash out with its backoff and restarts the actor without counting it against the
    restart budget, so a long outage never makes it give up; the actor recovers when the resource does.
    """


class Address(Generic[M]):
    """Where to send messages to one actor. It outlives restarts: the supervisor owns the mailbox."""

    __slots__ = ("_send", "name")

    def __init__(self, name: str, send: trio.MemorySendChannel[M]) -> None:
        self.name = name
        self._send = send

    async def send(self, msg: M) -> None:
        """Enqueue `msg`, waiting while the mailbox is full. Raises DeadActorError if the actor is gone."""
        try:
            await self._send.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise DeadActorError(f"actor {self.name} has stopped") from exc

    def send_nowait(self, msg: M) -> None:
        """Enqueue `msg` now. Raises BusyError when the mailbox is full, DeadActorError when it is gone."""
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock as exc:
            raise BusyError(f"actor {self.name} is busy") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise DeadActorError(f"actor {self.name} has stopped") from exc

    def backlog(self) -> int:
        """Return how many messages wait in the mailbox."""
        return self._send.statistics().current_buffer_used

    def __repr__(self) -> str:
        return f"Address({self.name!r})"


class Mailbox(Generic[M]):
    """A bounded FIFO inbox; `address` is the sending side handed out to others."""

    __slots__ = ("address", "capacity", "inbox")

    def __init__(self, name: str, *, capacity: int = 64) -> None:
        send, receive = trio.open_memory_channel[M](capacity)
        self.capacity = capacity
        self.inbox: trio.MemoryReceiveChannel[M] = receive
        self.address: Address[M] = Address(name, send)


_UNSET = object()


class Reply(Generic[T]):
    """A one-shot answer slot carried inside a request message.

    It also settles, once, who owns the request when the asker's deadline passes: an actor that `claim()`s it
    before starting work commits to answering with the real outcome (the asker then waits for it, however long);
    an asker that `withdraw()`s it first is told the request never ran, and the actor skips it. So an answer
    "not done" (a 503) always means not done, never "done, but too late to say".
    """

    __slots__ = ("_claimed", "_error", "_event", "_value", "_withdrawn")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: object = _UNSET
        self._error: BaseException | None = None
        self._claimed = False
        self._withdrawn = False

    def claim(self) -> bool:
        """The actor starts on the request: False when its asker has already withdrawn it (skip it then)."""
        if self._withdrawn:
            return False
        self._claimed = True
        return True

    def withdraw(self) -> bool:
        """The asker gives up: True when no actor has claimed the request, which then never runs."""
        if self._claimed:
            return False
        self._withdrawn = True
        return True

    @property
    def withdrawn(self) -> bool:
        return self._withdrawn

    def set(self, value: T) -> None:
        """Answer with a value; a second answer is ignored (the first one wins)."""
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        """Answer with an error that `wait()` will raise; ignored when already answered."""
        if not self._event.is_set():
            self._error = error
            self._event.set()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> T:
        """Block until answered; return the value or raise the error."""
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


async def ask(address: Address[M], make: Callable[[Reply[T]], M], *, timeout: float) -> T:
    """Send `make(reply)` to `address` and wait for the answer.

    Raises AskTimeoutError when no answer comes within `timeout` seconds (the wait for mailbox space counts too)
    and no actor has claimed the request: it is withdrawn, so an actor that claims its requests never runs it.
    A claimed request is waited for until its real answer. Raises DeadActorError when the actor is gone, and
    whatever error the actor answered with.
    """
    reply: Reply[T] = Reply()
    with trio.move_on_after(timeout) as scope:
        await address.send(make(reply))
        return await reply.wait()
    assert scope.cancelled_caught
    if not reply.withdraw():
        return await reply.wait()  # the actor is on it: its outcome, not a guess, is the answer
    raise AskTimeoutError(f"{address.name} did not answer within {timeout:g} s")


class Stop(msgspec.Struct, frozen=True):
    """Ask an actor to finish what is queued and exit normally."""
