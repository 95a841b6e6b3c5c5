"""Connector actors: one supervised actor per configured connector, their registry, and the ingress dispatcher."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Literal

import msgspec
import trio

from actors.base import Address, BusyError, DeadActorError, Reply, ask
from actors.messages import RouterMsg, SessionKey, Submit, TurnAccepted
from actors.store import StorageUnavailableError, Store
from actors.supervisor import Child, ChildSpec, Registry, Restart, RestartPolicy, Supervisor
from storage import ingress as ingress_db
from storage import outbox as outbox_db
from storage.clock import now_ms
from storage.usage import UsageCapReachedError

log = logging.getLogger("gateway.connectors")


class Answer(msgspec.Struct, frozen=True):
    """An HTTP answer produced by a connector for an ingress request (the edge renders it)."""

    status: int
    body: Any
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    media_type: str = "application/json"
    redact: bool = True  # False only for a sidecar's credential answer, whose purpose is the secret


class Inbound(msgspec.Struct, frozen=True):
    """An ingress request handed from the HTTP edge to the connector's actor, raw body included."""

    action: str  # "" for the connector's root route, "events", "events/batch", "credentials/<key>"...
    headers: Mapping[str, str]
    body: bytes
    reply: Reply[Answer]


class DeliveryResult(msgspec.Struct, frozen=True):
    outcome: Literal["delivered", "retryable", "terminal"]
    error: str | None = None
    retry_after: float | None = None


class DeliveryRequest(msgspec.Struct, frozen=True):
    delivery_id: str
    session_id: str
    turn_id: str
    target: dict[str, Any]
    text: str


class Deliver(msgspec.Struct, frozen=True):
    request: DeliveryRequest
    reply: Reply[DeliveryResult]


ConnectorMsg = Inbound | Deliver


class Connector:
    """What a protocol adapter implements; one instance lives for one life of its actor."""

    kind: str = ""
    name: str = ""

    async def background(self) -> None:
        """Long-running work (polling, a sidecar). Raising crashes the actor, which is restarted with backoff."""
        await trio.sleep_forever()

    async def handle(self, msg: Inbound) -> Answer:
        """Answer one ingress request; a raised error is answered to that request only."""
        raise NotImplementedError

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        """Send one reply to this connector's platform."""
        return DeliveryResult("terminal", f"{self.kind} connectors cannot deliver replies")

    async def aclose(self) -> None:
        """Release what the adapter holds (HTTP clients, processes); called at the end of every life."""


ConnectorFactory = Callable[[], Awaitable[Connector]]


async def _serve(factory: ConnectorFactory, inbox: trio.MemoryReceiveChannel[ConnectorMsg]) -> None:
    connector = await factory()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connector.background)
            async for msg in inbox:
                match msg:
                    case Inbound():
                        if msg.reply.claim():  # else its asker gave up waiting: it must never run
                            nursery.start_soon(_answer, connector, msg)
                    case Deliver():
                        nursery.start_soon(_deliver, connector, msg)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await connector.aclose()


async def _answer(connector: Connector, msg: Inbound) -> None:
    try:
        msg.reply.set(await connector.handle(msg))
    except Exception as exc:
        msg.reply.fail(exc)
    finally:
        if not msg.reply.done:
            # This life ended mid-request (a crash beside it, a replacement): the asker, who waits for a claimed
            # request however long it takes, must hear of it. What was stored stays stored.
            msg.reply.fail(DeadActorError(f"connector {connector.kind}/{connector.name} restarted mid-request"))


async def _deliver(connector: Connector, msg: Deliver) -> None:
    try:
        msg.reply.set(await connector.deliver(msg.request))
    except Exception as exc:
        # Only the type: an exception's text may carry a URL with a token in it (Telegram's /bot<token>/).
        log.warning("delivery %s via %s failed: %r", msg.request.delivery_id, connector.name, exc)
        msg.reply.set(DeliveryResult("retryable", f"{type(exc).__name__} while delivering"))


class ConnectorRegistry:
    """Starts, replaces and stops connector actors by `kind/name`, as children of its own Supervisor."""

    def __init__(self, registry: Registry, *, policy: RestartPolicy | None = None) -> None:
        self.registry = registry
        self.policy = policy or RestartPolicy(Restart.PERMANENT, max_restarts=8, window=60.0, backoff=0.5)
        self._supervisor = Supervisor("connectors")
        self._ready = trio.Event()
        # Serialises start/stop so two concurrent PUTs of one connector cannot leave an orphaned actor.
        self._lock = trio.Lock()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the actors' supervisor open until cancelled."""
        async with self._supervisor:
            self._ready.set()
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._ready = trio.Event()

    def _child(self, ref: str) -> Child[ConnectorMsg] | None:
        return self._supervisor.get(f"connector:{ref}")

    def address_of(self, ref: str) -> Address[ConnectorMsg] | None:
        child = self._child(ref)
        return child.address if child is not None and child.error is None else None

    async def start(self, ref: str, factory: ConnectorFactory) -> None:
        """Start (or replace) the actor for `ref`; the old one is stopped first."""
        await self._ready.wait()
        async with self._lock:
            await self._stop(ref)
            spec: ChildSpec[ConnectorMsg] = ChildSpec(
                name=f"connector:{ref}",
                run=partial(_serve, factory),
                policy=self.policy,
                capacity=1024,
                registry=self.registry,
            )
            # A crash beyond the budget is never silent: the state stays `failed` with the error in /api/status
            # until reconfigured (the Supervisor keeps the failed child's record).
            await self._supervisor.start(spec)

    async def stop(self, ref: str) -> None:
        """Stop the actor for `ref` (if running) and wait until it is gone."""
        async with self._lock:
            await self._stop(ref)

    async def _stop(self, ref: str) -> None:
        child = self._child(ref)
        if child is None:
            return
        await child.stop()
        self._supervisor.forget(child.name)
        self.registry.unregister(child.name)

    def refs(self) -> list[str]:
        return sorted(c.name.removeprefix("connector:") for c in self._supervisor.children())

    def statistics(self, ref: str) -> dict[str, Any]:
        """Return state, last_error, restarts and mailbox backlog of one connector actor."""
        info = self.registry.get(f"connector:{ref}")
        child = self._child(ref)
        if child is not None and child.error is not None:
            snap = info.snapshot() if info is not None else {}
            return {
                "state": "failed",
                "last_error": child.error,
                "restarts": snap.get("restarts", 0),
                "backlog": 0,
            }
        if info is None:
            return {"state": "stopped", "last_error": None, "restarts": 0, "backlog": 0}
        snap = info.snapshot()
        return {
            "state": snap["state"],
            "last_error": snap["last_error"],
            "restarts": snap["restarts"],
            "backlog": snap["backlog"],
        }


class IngressDispatcher:
    """Feeds stored ingress events to the agent after their commit, following a durable cursor.

    Events of one session that arrived together are coalesced into one turn, so a burst of thousands
    of events costs a handful of turns. Each turn is recorded in the same transaction as the mark that its
    events are fed (`ingress_fed`), so a crash before the cursor update feeds nothing twice (exactly once
    towards the agent; a turn the crash interrupts ends `interrupted`).
    """

    def __init__(
        self,
        store: Store,
        router: Address[RouterMsg],
        *,
        batch: int = 500,
        settle: float = 0.05,
        max_delay: float = 1.0,
        on_turn: Callable[[SessionKey, TurnAccepted], None] | None = None,
    ) -> None:
        self.store = store
        self.on_turn = on_turn  # told of each turn it submits (cheap, never blocks): notifications
        self.on_refused: Callable[[], None] | None = None  # a refusal was planned for delivery: wake the outbox
        self.refused = 0
        self.settle = settle
        self.max_delay = max_delay
        self._last_wake = 0.0
        self.router = router
        self.batch = batch
        self.dispatched = 0
        self.turns = 0
        self._wake = trio.Event()

    def wake(self) -> None:
        """Say new events were committed (cheap, never blocks; coalesces)."""
        self._last_wake = trio.current_time()
        self._wake.set()

    async def _settle(self) -> None:
        # Feeding the agent yields to ingress: wait until commits pause for `settle` seconds, but never
        # longer than `max_delay` after the first one. Bursts become fewer, bigger turns, and the ingress
        # answers (which never wait for this) keep the CPU while a batch upload is running.
        first = trio.current_time()
        while True:
            quiet_at = self._last_wake + self.settle
            now = trio.current_time()
            if now >= quiet_at or now - first >= self.max_delay:
                return
            await trio.sleep(min(quiet_at, first + self.max_delay) - now)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain the backlog left by a previous run, then follow new commits until cancelled."""
        task_status.started()
        delay = 0.5
        while True:
            self._wake = trio.Event()
            try:
                while await self._round():
                    pass
            except StorageUnavailableError as exc:
                # Storage refuses (frozen, read-only, full): the events wait durably; try again, backing off.
                log.warning("ingress dispatcher: %s; retrying in %.1f s", exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.5
            await self._wake.wait()
            await self._settle()

    async def _round(self) -> bool:
        pending = await self.store.call(ingress_db.undispatched, limit=self.batch)
        if not pending:
            return False
        groups: dict[str, list[ingress_db.Pending]] = {}
        for p in pending:
            groups.setdefault(p.session_id, []).append(p)
        for rows in groups.values():
            first = rows[0]
            key = SessionKey(first.transport, first.chat_id, first.topic_id)
            text = "\n\n".join(r.text for r in rows if r.text) or "(event without text)"
            # The turn and the mark that its events are fed commit together: after a crash they are not fed again.
            try:
                accepted = await self._submit(
                    key, text, partial(ingress_db.mark_fed, session_id=first.session_id, last_id=rows[-1].id)
                )
            except UsageCapReachedError as exc:
                await self._refuse(first.session_id, rows[-1].id, exc)
                continue
            self.turns += 1
            if self.on_turn is not None:
                self.on_turn(key, accepted)
        await self.store.call(ingress_db.advance_cursor, pending[-1].id)
        self.dispatched += len(pending)
        return True

    async def _refuse(self, session_id: str, last_id: int, exc: UsageCapReachedError) -> None:
        """The session's owner is over their daily token cap: its events stay stored (marked fed, never run) and
        the chat is told so, by the outbox like any reply (once: the reply's id is made of the events')."""
        text = f"Not sent to the agent: {exc}."

        def refuse(conn: sqlite3.Connection) -> None:
            ingress_db.mark_fed(conn, session_id, last_id)
            outbox_db.plan_turn(conn, session_id, f"usage-cap-{session_id}-{last_id}", text, now_ms=now_ms())

        await self.store.call(refuse)
        self.refused += 1
        log.info("events of session %s up to %d refused: %s", session_id, last_id, exc)
        if self.on_refused is not None:
            self.on_refused()

    async def _submit(self, key: SessionKey, text: str, also: Callable[[sqlite3.Connection], None]) -> TurnAccepted:
        delay = 0.05
        while True:
            try:
                return await ask(self.router, lambda r: Submit(key, text, r, also), timeout=30)
            except UsageCapReachedError:
                raise  # not temporary within the day: the caller answers the chat instead
            except (BusyError, DeadActorError, Exception) as exc:
                # A full session queue is temporary; the events are durable, so wait and try again.
                log.warning("cannot feed events to session %s yet (%s); retrying in %.2fs", key, exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
