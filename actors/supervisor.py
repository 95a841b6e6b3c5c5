"""Supervision: Erlang's restart modes, a restart budget counted on trio's clock, and a registry of actors."""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import trio

from actors.base import Address, DeadActorError, Mailbox, Reply, TemporaryFailure

M = TypeVar("M")
log = logging.getLogger("gateway.supervisor")

# Every task a Supervisor starts for a child is named `supervised:<child name>`; the child's own tasks are its
# descendants. tests/gateway/test_supervision.py walks a running gateway's task tree with this convention and fails
# on any other long-lived task (docs/architecture.md, "Supervision tree").
SUPERVISED = "supervised:"


class Restart(enum.Enum):
    PERMANENT = "permanent"  # restarted whatever the reason it stopped
    TRANSIENT = "transient"  # restarted only after a crash
    TEMPORARY = "temporary"  # never restarted


class RestartPolicy(msgspec.Struct, frozen=True):
    mode: Restart = Restart.PERMANENT
    max_restarts: int = 5
    window: float = 60.0  # seconds on trio's clock, so MockClock drives it in tests
    backoff: float = 0.1  # first delay before a restart, doubled per restart still inside the window
    max_backoff: float = 30.0


def is_temporary(exc: BaseException) -> bool:
    """True when `exc` (or every crash inside a nursery's group) is a TemporaryFailure, e.g. storage refusing."""
    if isinstance(exc, TemporaryFailure):
        return True
    if isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        return bool(leaves) and all(is_temporary(e) for e in leaves)
    return False


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
        self._times: deque[float] | None = None  # created by the first restart: most actors never restart

    def allows(self, error: BaseException | None, *, now: float) -> bool:
        """Return True when the actor that just stopped (crashed when `error` is set) should restart."""
        mode = self.policy.mode
        if mode is Restart.TEMPORARY or (mode is Restart.TRANSIENT and error is None):
            return False
        if self._times is None:
            self._times = deque()
        while self._times and now - self._times[0] > self.policy.window:
            self._times.popleft()
        if len(self._times) >= self.policy.max_restarts:
            return False
        self._times.append(now)
        return True

    def delay(self) -> float:
        """Return the backoff before the restart just allowed (grows while restarts crowd the window)."""
        n = max(len(self._times or ()) - 1, 0)
        return float(min(self.policy.backoff * (2**n), self.policy.max_backoff))


class GaveUpError(Exception):
    """A supervised actor crashed more often than its restart budget allows."""


class Backlogged(Protocol):
    """What the registry asks of a live actor: how many messages wait for it (an Address answers this)."""

    def backlog(self) -> int: ...


class ActorInfo(msgspec.Struct):
    """Live facts about one actor, as shown by `Registry.statistics()`; ~150 bytes, so every live one is listed."""

    name: str
    state: str = "starting"  # starting | running | restarting | stopped | failed
    restarts: int = 0
    last_error: str | None = None
    started_at: float = 0.0
    address: Backlogged | None = None

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

    def addresses(self, prefix: str) -> list[Backlogged]:
        """The addresses of the live actors whose name starts with `prefix`."""
        return [i.address for n, i in self._actors.items() if n.startswith(prefix) and i.address is not None]

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


class ChildSpec(msgspec.Struct, Generic[M], frozen=True):
    """How to run one actor: `run(inbox)` is called again on every restart with the same inbox."""

    name: str
    run: Callable[[trio.MemoryReceiveChannel[M]], Awaitable[None]]
    policy: RestartPolicy = RestartPolicy()
    capacity: int = 64
    registry: Registry | None = None
    # A failed actor stays listed (its error visible) unless its owner forgets it anyway, as the router does with
    # a session whose budget ran out: the next message revives it, so the entry would only accumulate.
    forget_failed: bool = False
    # Set by the child once it is ready to serve (see `service(announces=True)`); `Supervisor.start` waits for it.
    ready: trio.Event | None = None


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


async def supervise(
    spec: ChildSpec[M],
    *,
    mailbox: Mailbox[M] | None = None,
    task_status: trio.TaskStatus[Address[M]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `spec.run` under its restart policy; hand back the actor's Address through `task_status`.

    Returns when the actor stops and may not be restarted; raises GaveUpError when a crash exhausts the
    budget. Only `Exception` counts as a crash: cancellation passes straight through. A permanent actor waits
    out a TemporaryFailure (storage down) with its backoff and is restarted without counting it.
    """
    mailbox = mailbox or Mailbox(spec.name, capacity=spec.capacity)
    budget = RestartBudget(spec.policy)
    crashes = 0
    waits = 0  # temporary failures in a row, waited out by a permanent actor without counting them
    info = spec.registry.register(spec.name, mailbox.address) if spec.registry is not None else None
    try:
        with mailbox.inbox:
            task_status.started(mailbox.address)
            while True:
                if info:
                    info.state = "running"
                error: Exception | None
                started = trio.current_time()
                try:
                    await spec.run(mailbox.inbox)
                    error = None
                except Exception as exc:
                    if info:
                        info.last_error = describe_error(exc)
                    if spec.policy.mode is Restart.PERMANENT and is_temporary(exc):
                        # Not a bug in the actor: something it needs is down (storage). Wait it out, never give up.
                        if trio.current_time() - started >= spec.policy.max_backoff:
                            waits = 0
                        delay = min(spec.policy.backoff * 2 ** min(waits, 30), spec.policy.max_backoff)
                        waits += 1
                        log.warning("actor %s: %s; restarting in %.1f s", spec.name, describe_error(exc), delay)
                        if info:
                            info.state = "restarting"
                            info.restarts += 1
                        await trio.sleep(delay)
                        continue
                    error = exc
                    crashes += 1
                    if is_temporary(exc):  # storage refused: one line, no traceback of our own code
                        log.warning("actor %s stopped: %s", spec.name, describe_error(exc))
                    else:
                        log.error("actor %s crashed: %r", spec.name, exc, exc_info=exc)
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


def service(
    name: str,
    run: Callable[..., Awaitable[None]],
    policy: RestartPolicy | None = None,
    *,
    registry: Registry | None = None,
    announces: bool = False,
) -> ChildSpec[None]:
    """A child with no mailbox to read (a poller, a dispatcher, a timer loop), restarted under `policy`.

    With `announces`, `run` takes trio's `task_status` and `Supervisor.start` returns only once its first life
    has called `task_status.started()` (like `nursery.start`); a later life's call is ignored.
    """
    ready = trio.Event() if announces else None

    async def body(inbox: trio.MemoryReceiveChannel[None]) -> None:
        if ready is not None:
            await run(task_status=_Ready(ready))
        else:
            await run()

    # A service waits out storage outages (TemporaryFailure) at most 5 s apart, so it resumes soon after.
    policy = policy or RestartPolicy(Restart.PERMANENT, backoff=0.5, max_backoff=5.0)
    return ChildSpec(name, body, policy, capacity=1, registry=registry, ready=ready)


class Child(msgspec.Struct, Generic[M], eq=False):
    """One child of a Supervisor: its spec and address, and whether it has ended or failed for good."""

    spec: ChildSpec[M]
    address: Address[M]
    scope: trio.CancelScope = msgspec.field(default_factory=trio.CancelScope)
    done: trio.Event = msgspec.field(default_factory=trio.Event)
    error: str | None = None  # why it failed for good (a crash when its restart budget had run out)

    @property
    def name(self) -> str:
        return self.spec.name

    async def stop(self) -> None:
        """Cancel this child (its whole life, restarts included) and wait until it is gone."""
        self.scope.cancel()
        await self.done.wait()


class Supervisor:
    """A dynamic supervisor: starts and stops named children, each under `supervise` (restart budget, backoff,
    registry entry) in its own task named `supervised:<name>`.

    A child whose budget runs out is marked failed (`Child.error`; `on_failed` is told) and never escalated, so no
    child can end the process: only the runtime root does. Use `async with Supervisor(name) as sup:` (children live
    inside the block, which waits for them) or start `Supervisor.run` as a task.
    """

    def __init__(self, name: str, *, on_failed: Callable[[Child[Any]], None] | None = None) -> None:
        self.name = name
        self.on_failed = on_failed
        self._nursery: trio.Nursery | None = None
        self._manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._children: dict[str, Child[Any]] = {}  # the newest child of each name

    async def __aenter__(self) -> Supervisor:
        self._children.clear()  # a new life (the owner was restarted): the old children went with the old one
        self._manager = trio.open_nursery()
        self._nursery = await self._manager.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        assert self._manager is not None
        try:
            return bool(await self._manager.__aexit__(kind, exc, tb))
        finally:
            self._nursery = self._manager = None

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the children's nursery open until cancelled."""
        async with self:
            task_status.started(self)
            await trio.sleep_forever()

    def cancel(self, reason: str | None = None) -> None:
        """Stop every child (at shutdown)."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel(reason)

    def _child(self, spec: ChildSpec[M]) -> tuple[trio.Nursery, Child[M], Mailbox[M]]:
        if self._nursery is None:
            raise RuntimeError(f"supervisor {self.name} is not running")
        mailbox: Mailbox[M] = Mailbox(spec.name, capacity=spec.capacity)
        child = Child(spec, mailbox.address)
        self._children[spec.name] = child
        return self._nursery, child, mailbox

    async def start(self, spec: ChildSpec[M]) -> Child[M]:
        """Start a child and return once it runs (listed in its registry). A child of the same name already
        running is not touched: stopping it first, or letting it finish, is the caller's choice."""
        nursery, child, mailbox = self._child(spec)
        await nursery.start(self._run, child, mailbox, name=SUPERVISED + spec.name)
        if spec.ready is not None:
            await _either(spec.ready, child.done)  # a child that gives up before it is ready must not hang us
        return child

    def start_soon(self, spec: ChildSpec[M]) -> Child[M]:
        """`start` for synchronous callers: the child's address takes messages at once; it runs soon."""
        nursery, child, mailbox = self._child(spec)
        nursery.start_soon(self._run, child, mailbox, name=SUPERVISED + spec.name)
        return child

    async def _run(
        self, child: Child[M], mailbox: Mailbox[M], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with child.scope:
                await supervise(child.spec, mailbox=mailbox, task_status=_Started(task_status))
        except GaveUpError as exc:
            child.error = describe_error(exc.__cause__ or exc)
            log.error("%s", exc)
            if self.on_failed is not None:
                self.on_failed(child)
        finally:
            child.done.set()
            if self._children.get(child.name) is child and child.error is None:
                del self._children[child.name]

    def get(self, name: str) -> Child[Any] | None:
        """The newest child of that name, running or failed for good (a stopped one is forgotten)."""
        return self._children.get(name)

    def children(self) -> list[Child[Any]]:
        return list(self._children.values())

    def forget(self, name: str) -> None:
        """Drop a failed child's record (its owner reconfigured or removed it)."""
        child = self._children.get(name)
        if child is not None and child.done.is_set():
            del self._children[name]


async def _either(a: trio.Event, b: trio.Event) -> None:
    async def wait(event: trio.Event, scope: trio.CancelScope) -> None:
        await event.wait()
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, a, nursery.cancel_scope)
        nursery.start_soon(wait, b, nursery.cancel_scope)


class _Ready:
    """The `task_status` of a service's life: its first `started()` marks the service ready."""

    __slots__ = ("_ready",)

    def __init__(self, ready: trio.Event) -> None:
        self._ready = ready

    def started(self, value: object = None) -> None:
        self._ready.set()


class _Started:
    """Passes `started()` on to the Supervisor's caller without the address (which it already has)."""

    __slots__ = ("_outer",)

    def __init__(self, outer: trio.TaskStatus[None]) -> None:
        self._outer = outer

    def started(self, value: object = None) -> None:
        self._outer.started()
