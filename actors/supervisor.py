"""Supervision: Erlang's restart modes, a restart budget counted on trio's clock, and a registry of actors."""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import trio

from actors.base import Address, DeadActorError, Mailbox, Reply

M = TypeVar("M")
log = logging.getLogger("gateway.supervisor")


class Restart(enum.Enum):
    PERMANENT = "permanent"  # restarted whatever the reason it stopped
    TRANSIENT = "transient"  # restarted only after a crash
    TEMPORARY = "temporary"  # never restarted


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    mode: Restart = Restart.PERMANENT
    max_restarts: int = 5
    window: float = 60.0  # seconds on trio's clock, so MockClock drives it in tests
    backoff: float = 0.1  # first delay before a restart, doubled per restart still inside the window
    max_backoff: float = 30.0


def describe_error(exc: BaseException) -> str:
    """`Type: message` of the error that matters: nurseries wrap a crash in groups that say nothing by themselves."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        leaves = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if len(leaves) != 1:
            break
        exc = leaves[0]
    return f"{type(exc).__name__}: {exc}"


class RestartBudget:
    """Counts restarts in a sliding window and says whether one more is allowed."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._times: deque[float] = deque()

    def allows(self, error: BaseException | None, *, now: float) -> bool:
        """Return True when the actor that just stopped (crashed when `error` is set) should restart."""
        mode = self.policy.mode
        if mode is Restart.TEMPORARY or (mode is Restart.TRANSIENT and error is None):
            return False
        while self._times and now - self._times[0] > self.policy.window:
            self._times.popleft()
        if len(self._times) >= self.policy.max_restarts:
            return False
        self._times.append(now)
        return True

    def delay(self) -> float:
        """Return the backoff before the restart just allowed (grows while restarts crowd the window)."""
        n = max(len(self._times) - 1, 0)
        return float(min(self.policy.backoff * (2**n), self.policy.max_backoff))


class GaveUpError(Exception):
    """A supervised actor crashed more often than its restart budget allows."""


class Backlogged(Protocol):
    """What the registry asks of a live actor: how many messages wait for it (an Address answers this)."""

    def backlog(self) -> int: ...


@dataclass(slots=True)
class ActorInfo:
    """Live facts about one actor, as shown by `Registry.statistics()`; ~150 bytes, so every live one is listed."""

    name: str
    state: str = "starting"  # starting | running | restarting | stopped | failed
    restarts: int = 0
    last_error: str | None = None
    started_at: float = 0.0
    address: Backlogged | None = field(default=None, repr=False)

    def snapshot(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "backlog": self.address.backlog() if self.address is not None else 0,
        }


class Registry:
    """Every live actor by name (store, router, sessions, connectors, /ws connections...), so status pages can see
    states, restarts, errors and backlogs. Hibernated sessions are not actors: they cost nothing here."""

    def __init__(self) -> None:
        self._actors: dict[str, ActorInfo] = {}

    def register(self, name: str, address: Backlogged, *, state: str = "starting") -> ActorInfo:
        """List an actor under `name` (replacing an older entry of that name) and return its entry.

        Supervised actors are registered by `supervise`; an actor that is never restarted (Restart.TEMPORARY,
        e.g. a /ws connection: its socket cannot be reopened, its client reconnects) registers itself and
        calls `unregister(name, info)` when it ends.
        """
        info = ActorInfo(name=name, state=state, address=address, started_at=trio.current_time())
        self._actors[name] = info
        return info

    def unregister(self, name: str, info: ActorInfo | None = None) -> None:
        """Drop `name`; with `info`, only if that is still its entry.

        A session retired and revived at once has a new entry under the same name before the old actor's
        supervisor has finished: the old one must not remove the new one's.
        """
        if info is None or self._actors.get(name) is info:
            self._actors.pop(name, None)

    def count(self, prefix: str) -> int:
        """How many live actors have a name starting with `prefix` (e.g. "session:")."""
        return sum(1 for name in self._actors if name.startswith(prefix))

    def get(self, name: str) -> ActorInfo | None:
        return self._actors.get(name)

    def statistics(self) -> dict[str, dict[str, object]]:
        """Return a snapshot of every registered actor."""
        return {name: info.snapshot() for name, info in sorted(self._actors.items())}

    def status_check(self, *, limit: int = 200) -> dict[str, object]:
        """The `actors` check of `/api/status`: live actors by kind, and the first `limit` of them by name.

        In error while an actor has failed for good (a connector given up, until reconfigured).
        """
        kinds: dict[str, int] = {}
        for name in self._actors:
            kind = name.split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        failed = sorted(n for n, info in self._actors.items() if info.state == "failed")
        names = sorted(self._actors)[:limit]
        return {
            "status": "error" if failed else "ok",
            "details": {
                "live": kinds,
                "failed": failed,
                "actors": [self._actors[n].snapshot() for n in names],
                "truncated": len(self._actors) > limit,
            },
        }

    def __len__(self) -> int:
        return len(self._actors)


@dataclass(frozen=True, slots=True)
class ChildSpec(Generic[M]):
    """How to run one actor: `run(inbox)` is called again on every restart with the same inbox."""

    name: str
    run: Callable[[trio.MemoryReceiveChannel[M]], Awaitable[None]]
    policy: RestartPolicy = RestartPolicy()
    capacity: int = 64
    registry: Registry | None = None
    # A failed actor stays listed (its error visible) unless its owner forgets it anyway, as the router does with
    # a session whose budget ran out: the next message revives it, so the entry would only accumulate.
    forget_failed: bool = False


def _answer_leftovers(inbox: trio.MemoryReceiveChannel[M], name: str) -> None:
    """Fail the replies of requests still queued for an actor that will not run again: their senders learn it now
    instead of waiting out their timeouts. No checkpoint follows before the mailbox closes, so none slips in."""
    while True:
        try:
            msg = inbox.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
        reply = getattr(msg, "reply", None)
        if isinstance(reply, Reply):
            reply.fail(DeadActorError(f"actor {name} has stopped"))


async def supervise(spec: ChildSpec[M], *, task_status: trio.TaskStatus[Address[M]] = trio.TASK_STATUS_IGNORED) -> None:
    """Run `spec.run` under its restart policy; hand back the actor's Address through `task_status`.

    Returns when the actor stops and may not be restarted; raises GaveUpError when a crash exhausts the
    budget. Only `Exception` counts as a crash: cancellation passes straight through.
    """
    mailbox: Mailbox[M] = Mailbox(spec.name, capacity=spec.capacity)
    budget = RestartBudget(spec.policy)
    crashes = 0
    info = spec.registry.register(spec.name, mailbox.address) if spec.registry is not None else None
    try:
        with mailbox.inbox:
            task_status.started(mailbox.address)
            while True:
                if info:
                    info.state = "running"
                error: Exception | None
                try:
                    await spec.run(mailbox.inbox)
                    error = None
                except Exception as exc:
                    error = exc
                    crashes += 1
                    log.error("actor %s crashed: %r", spec.name, exc, exc_info=exc)
                    if info:
                        info.last_error = describe_error(exc)
                except BaseExceptionGroup as group:
                    # A crash that arrived together with a cancellation (a child failed while the actor was being
                    # stopped): the group is not an `Exception`, and letting the crash part escape would take the
                    # supervisor's parent down. Record it; only the cancellation goes on.
                    crashed, rest = group.split(Exception)
                    if crashed is not None:
                        log.warning("actor %s failed while stopping: %s", spec.name, describe_error(crashed))
                        if info:
                            info.last_error = describe_error(crashed)
                    if rest is None:  # cannot happen (then it was an `Exception`); kept for the type checker
                        raise
                    raise rest from None
                if not budget.allows(error, now=trio.current_time()):
                    _answer_leftovers(mailbox.inbox, spec.name)
                    if error is not None:
                        if info:
                            info.state = "failed"
                        raise GaveUpError(
                            f"actor {spec.name} crashed {crashes} time(s) and its restart budget "
                            f"({spec.policy.mode.value}, {spec.policy.max_restarts} in {spec.policy.window:g} s) "
                            "allows no more; giving up"
                        ) from error
                    if info:
                        info.state = "stopped"
                    return
                if info:
                    info.state = "restarting"
                    info.restarts += 1
                await trio.sleep(budget.delay())
    finally:
        if spec.registry is not None and info is not None and (info.state != "failed" or spec.forget_failed):
            spec.registry.unregister(spec.name, info)
