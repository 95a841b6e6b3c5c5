"""The router actor: maps each SessionKey to its session actor, starting it on first use and retiring it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import msgspec
import trio

from actors.base import Address, BusyError, DeadActorError, Stop
from actors.choice import Choose, following
from actors.messages import Idle, Retire, RouterMsg, SessionKey, SessionMsg, Unsubscribe
from actors.providers.base import Provider
from actors.session import Parked, SessionActor, SessionConfig
from actors.store import Store
from actors.supervisor import Child, ChildSpec, Registry, Restart, RestartPolicy, Supervisor, supervise
from storage.events import EventRow

log = logging.getLogger("gateway.router")

# Messages the router handles in one go before it lets the other tasks run (each takes microseconds).
DRAIN_PER_PASS = 256


class _Live(msgspec.Struct):
    child: Child[SessionMsg]
    actor: SessionActor
    sent: int = 0

    @property
    def address(self) -> Address[SessionMsg]:
        return self.child.address


class RouterStats(msgspec.Struct, frozen=True):
    live_sessions: int
    started: int
    retired: int
    crashed: int


class Router:
    """Owns the nursery of session actors. Never blocks on a child: a full session mailbox answers 'busy'."""

    def __init__(
        self,
        *,
        store: Store,
        provider: Callable[[], Provider] | None = None,
        choose: Choose | None = None,
        session_config: SessionConfig | None = None,
        registry: Registry | None = None,
        session_policy: RestartPolicy | None = None,
        session_capacity: int = 64,
        on_event: Callable[[EventRow], None] | None = None,
    ) -> None:
        self.store = store
        # What each turn runs on (`choose`, the runtime's AgentChoice.resolve); a bare `provider` serves tests.
        if choose is None:
            assert provider is not None, "give the router a chooser or a provider"
            choose = following(provider)
        self.choose = choose
        self.session_config = session_config or SessionConfig()
        self.registry = registry or Registry()
        self.session_policy = session_policy or RestartPolicy(Restart.TRANSIENT, max_restarts=3, window=10.0)
        self.session_capacity = session_capacity
        self.on_event = on_event
        self._live: dict[SessionKey, _Live] = {}
        # Retired actors that may still be finishing (flushing, deleting): a new actor of the key waits for this.
        self._leaving: dict[SessionKey, trio.Event] = {}
        # Sessions parked while subscribers listen (an idle /ws connection's): no actor, only what wakes one.
        self._parked: dict[SessionKey, Parked] = {}
        self._sweep_at = 64  # prune parked sessions nobody listens to once this many are parked
        self._started = 0
        self._retired = 0
        self._crashed = 0
        self.address: Address[RouterMsg] | None = None

    @property
    def live_sessions(self) -> int:
        return len(self._live)

    @property
    def parked_sessions(self) -> int:
        """Sessions asleep with subscribers still listening (each wakes on its next request)."""
        return len(self._parked)

    def statistics(self) -> RouterStats:
        return RouterStats(len(self._live), self._started, self._retired, self._crashed)

    def address_of(self, key: SessionKey) -> Address[SessionMsg] | None:
        """Return the live session's address, or None when it is hibernated (for inspection and tests)."""
        live = self._live.get(key)
        return live.address if live else None

    async def run(self, inbox: trio.MemoryReceiveChannel[RouterMsg]) -> None:
        async with Supervisor("sessions", on_failed=self._gave_up) as sessions:
            try:
                async for msg in inbox:
                    self._route(sessions, msg)
                    # Then what else waits, without a checkpoint each: `receive()` reschedules its task behind
                    # every other runnable one, so one message per scheduler pass would cap the router at a few
                    # dozen messages a second while 1000 connections stream on a loaded machine.
                    for _ in range(DRAIN_PER_PASS - 1):
                        try:
                            msg = inbox.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        self._route(sessions, msg)
            finally:
                self._live.clear()
                for parked in self._parked.values():
                    for ch in parked.subscribers:
                        ch.close()  # they subscribe again, to the router's next life
                self._parked.clear()

    def _route(self, sessions: Supervisor, msg: RouterMsg) -> None:
        if isinstance(msg, Idle):
            self._on_idle(msg)
        elif isinstance(msg, Retire):
            if self._forward(sessions, msg.key, msg):
                self._leave(msg.key)
        elif isinstance(msg, Unsubscribe) and msg.key not in self._live:
            self._unsubscribe_asleep(msg)
        else:
            self._forward(sessions, msg.key, msg)

    def _forward(self, sessions: Supervisor, key: SessionKey, msg: SessionMsg) -> bool:
        """Hand `msg` to the key's actor (started if needed); False when it could not take it (its reply failed).

        Never awaits: the router only routes. What a request costs (a new actor's storage reads, its acceptance
        commit) is waited for by the asker, on the reply the session answers, never by the router: one slow
        session or a slow store must not hold up every other key's messages behind it.
        """
        live = self._live.get(key)
        if live is None:
            live = self._spawn(sessions, key)
        try:
            live.address.send_nowait(msg)
        except BusyError as exc:
            reply = getattr(msg, "reply", None)
            if reply is not None:
                reply.fail(exc)
            return False
        except DeadActorError as exc:
            self._live.pop(key, None)
            reply = getattr(msg, "reply", None)
            if reply is not None:
                reply.fail(exc)
            return False
        live.sent += 1
        return True

    def _unsubscribe_asleep(self, msg: Unsubscribe) -> None:
        """A subscriber leaves a session without an actor: never woken for that (a hibernated one has none)."""
        parked = self._parked.get(msg.key)
        if parked is None:
            return
        if msg.channel in parked.subscribers:
            parked.subscribers.remove(msg.channel)
            msg.channel.close()
        if not parked.listened():
            del self._parked[msg.key]

    def _sweep(self) -> None:
        """Forget parked sessions whose subscribers have all gone without a word (amortised: at most twice the
        parked sessions listened to are kept)."""
        if len(self._parked) < self._sweep_at:
            return
        self._parked = {k: p for k, p in self._parked.items() if p.listened()}
        self._sweep_at = max(64, 2 * len(self._parked))

    def _spawn(self, sessions: Supervisor, key: SessionKey) -> _Live:
        assert self.address is not None, "Router.run must be started through supervise()"
        actor = SessionActor(
            key,
            store=self.store,
            router=self.address,
            choose=self.choose,
            config=self.session_config,
            on_event=self.on_event,
            after=self._leaving.pop(key, None),
            incarnation=self._started,
            woken=self._parked.pop(key, None),
        )
        spec: ChildSpec[SessionMsg] = ChildSpec(
            name=f"session:{key}",
            run=actor.run,
            policy=self.session_policy,
            capacity=self.session_capacity,
            # Listed while awake (issue 2: a registry of live actors); hibernation removes the entry.
            registry=self.registry,
            forget_failed=True,
        )
        # start_soon, not start: the mailbox takes messages at once and the actor reads them when it first runs.
        # Awaiting its first run cost the router one full scheduler pass per new session (tens of ms with 1000
        # busy connections on a loaded machine), during which no other key's message moved.
        child = sessions.start_soon(spec)
        live = _Live(child, actor)
        self._live[key] = live
        self._started += 1
        return live

    def _gave_up(self, child: Child[SessionMsg]) -> None:
        # One broken session must not take the others down: forget it; the next message revives it.
        self._crashed += 1
        for key, live in list(self._live.items()):
            if live.child is child:  # not a successor of the same name
                del self._live[key]

    def _on_idle(self, msg: Idle) -> None:
        # Decided on the count the message carries, never on the actor's live counter: a message sent after the
        # actor went idle may already have reached it (a turn in flight) by the time this Idle is read.
        live = self._live.get(msg.key)
        if live is None or live.actor.incarnation != msg.incarnation or live.sent != msg.received:
            return  # from an actor already retired, or something was sent after it went idle: it is busy again
        parking = Parked() if msg.watched else None
        live.actor.parking = parking
        try:
            live.address.send_nowait(Stop())
        except BusyError:
            live.actor.parking = None
            return  # cannot happen with nothing in flight; keep it rather than lose track of a live actor
        except DeadActorError:
            self._live.pop(msg.key, None)
            return
        self._leave(msg.key)
        if parking is not None:
            self._sweep()
            self._parked[msg.key] = parking

    def _leave(self, key: SessionKey) -> None:
        """Forget the key's actor, which has been told to stop; its successor (if any) waits until it has ended:
        its supervised task is over however it ended (a crash, a give-up with the Stop unread), so two actors of
        one key never overlap."""
        live = self._live.pop(key)
        self._retired += 1
        # Only actors still on their way out are kept (a table that only grew kept every retired key alive).
        if self._leaving:
            self._leaving = {k: e for k, e in self._leaving.items() if not e.is_set()}
        if not live.child.done.is_set():
            self._leaving[key] = live.child.done


async def start_router(
    parent: trio.Nursery | Supervisor, router: Router, *, capacity: int = 1024
) -> Address[RouterMsg]:
    """Start `router` under a permanent supervisor (a child of `parent`); return its address."""

    async def run(inbox: trio.MemoryReceiveChannel[RouterMsg]) -> None:
        await router.run(inbox)

    spec: ChildSpec[RouterMsg] = ChildSpec(
        name="router",
        run=run,
        capacity=capacity,
        registry=router.registry,
        policy=RestartPolicy(Restart.PERMANENT, max_restarts=5, window=60.0),
    )
    if isinstance(parent, Supervisor):
        address = (await parent.start(spec)).address
    else:
        address = await parent.start(partial(supervise, spec))
    router.address = address
    return address
