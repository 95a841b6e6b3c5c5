"""The outbox actor: plans deliveries for finished turns, hands them to connector actors, retries with backoff."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
import trio

from actors.base import Address, BusyError, DeadActorError
from actors.connector import DeliveryRequest, DeliveryResult
from actors.store import Store
from storage import outbox as outbox_db
from storage.clock import now_ms

log = logging.getLogger("gateway.outbox")


class TurnFinished(msgspec.Struct, frozen=True):
    session_id: str
    turn_id: str
    text: str


class Kick(msgspec.Struct, frozen=True):
    """Look for due deliveries now (after a retry from the API, or a connector came back)."""


OutboxMsg = TurnFinished | Kick
Deliverer = Callable[[str, DeliveryRequest], Awaitable[DeliveryResult]]


class OutboxPolicy(msgspec.Struct, frozen=True):
    max_attempts: int = 8
    backoff: float = 1.0  # seconds before the second attempt, doubled after each failure
    max_backoff: float = 300.0
    timeout: float = 30.0  # one attempt
    rescan_interval: float = 30.0  # look for finished turns whose TurnFinished was lost
    concurrency: int = 16


class OutboxActor:
    """Sole writer of the outbox table's states; deliveries run concurrently, one attempt per row at a time.

    `clock` gives the milliseconds that due times are stored in (the wall clock; a test passes trio's virtual one).
    """

    def __init__(
        self,
        store: Store,
        deliver: Deliverer,
        policy: OutboxPolicy | None = None,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.deliver_fn = deliver
        self.policy = policy or OutboxPolicy()
        self.clock = clock
        self.delivered = 0
        self.dead = 0
        self._inflight: set[str] = set()
        # Attempts that have recorded their outcome but are still counted in flight: they leave `_inflight` only
        # in the loop, between two reads of the due rows. A row read while its attempt was still running is stale
        # (still due, its old attempt count); were the attempt to leave `_inflight` while that read is awaited,
        # the loop would start a second attempt from the stale row.
        self._settled: set[str] = set()
        self._limiter = trio.CapacityLimiter(self.policy.concurrency)
        self._kick: trio.MemorySendChannel[OutboxMsg] | None = None

    async def run(self, inbox: trio.MemoryReceiveChannel[OutboxMsg]) -> None:
        """One life: catch up with turns finished while nothing listened, then serve until cancelled."""
        await self._rescan(since_ms=self.clock() - 24 * 3600 * 1000)
        next_rescan = trio.current_time() + self.policy.rescan_interval
        # Finished attempts post a Kick into this merged channel so the loop never sleeps past a retry.
        merged_send, merged = trio.open_memory_channel[OutboxMsg](4096)
        self._kick = merged_send

        async def forward() -> None:
            async for m in inbox:
                await merged_send.send(m)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            while True:
                self._inflight -= self._settled
                self._settled.clear()
                await self._start_due(nursery)
                nxt = await self.store.call(outbox_db.next_due_at, exclude=sorted(self._inflight))
                wait = self.policy.rescan_interval if nxt is None else max(0.0, (nxt - self.clock()) / 1000)
                wait = min(wait, max(0.0, next_rescan - trio.current_time()))
                with trio.move_on_after(wait):
                    msg = await merged.receive()
                    await self._on(msg)
                    # Drain what else is waiting so a burst of turns is planned in one go.
                    while True:
                        try:
                            await self._on(merged.receive_nowait())
                        except trio.WouldBlock:
                            break
                if trio.current_time() >= next_rescan:
                    await self._rescan(since_ms=self.clock() - 3600 * 1000)
                    next_rescan = trio.current_time() + self.policy.rescan_interval

    async def _on(self, msg: OutboxMsg) -> None:
        match msg:
            case TurnFinished():
                await self.store.call(outbox_db.plan_turn, msg.session_id, msg.turn_id, msg.text, now_ms=self.clock())
            case Kick():
                pass

    async def _rescan(self, *, since_ms: int) -> None:
        for session_id, turn_id, text in await self.store.call(outbox_db.unplanned_turns, since_ms=since_ms):
            await self.store.call(outbox_db.plan_turn, session_id, turn_id, text, now_ms=self.clock())

    async def _start_due(self, nursery: trio.Nursery) -> None:
        for d in await self.store.call(outbox_db.due, now_ms=self.clock(), limit=200):
            if d.delivery_id in self._inflight:
                continue
            self._inflight.add(d.delivery_id)
            nursery.start_soon(self._attempt, d)

    async def _attempt(self, d: outbox_db.Delivery) -> None:
        try:
            async with self._limiter:
                request = DeliveryRequest(d.delivery_id, d.session_id, d.turn_id, d.target, d.text)
                result: DeliveryResult | None = None
                with trio.move_on_after(self.policy.timeout):
                    try:
                        result = await self.deliver_fn(f"{d.plugin}/{d.connector}", request)
                    except (BusyError, DeadActorError) as exc:
                        result = DeliveryResult("retryable", str(exc))
                if result is None:
                    result = DeliveryResult("retryable", f"no answer within {self.policy.timeout:g} s")
                await self._record(d, result)
        finally:
            self._settled.add(d.delivery_id)  # the loop takes it out of `_inflight` before its next read
            if self._kick is not None:
                try:
                    self._kick.send_nowait(Kick())
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    pass

    async def _record(self, d: outbox_db.Delivery, result: DeliveryResult) -> None:
        ts = self.clock()
        if result.outcome == "delivered":
            await self.store.call(outbox_db.mark_delivered, d.delivery_id, now_ms=ts)
            self.delivered += 1
            return
        attempts = d.attempts + 1
        error = result.error or result.outcome
        if result.outcome == "terminal" or attempts >= self.policy.max_attempts:
            log.warning("delivery %s to %s/%s dead-lettered: %s", d.delivery_id, d.plugin, d.connector, error)
            await self.store.call(outbox_db.mark_failed, d.delivery_id, error, now_ms=ts, retry_at=None)
            self.dead += 1
            return
        delay = min(self.policy.backoff * 2 ** (attempts - 1), self.policy.max_backoff)
        if result.retry_after is not None:
            delay = max(delay, result.retry_after)
        await self.store.call(outbox_db.mark_failed, d.delivery_id, error, now_ms=ts, retry_at=ts + int(delay * 1000))


def send_kick(address: Address[OutboxMsg]) -> None:
    """Wake the outbox without blocking (a full mailbox already means it will look soon)."""
    try:
        address.send_nowait(Kick())
    except (BusyError, DeadActorError):
        pass
